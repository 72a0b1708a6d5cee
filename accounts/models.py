"""Members, users and roles, margin accounts, collateral assets, balances, movements and API tokens.

Ledgers (``CollateralMovement``) are append-only: the model refuses updates and deletes and the
database refuses them too (triggers installed by migration ``0002``). Balances are derived from the
ledger in the same transaction by ``accounts.services``; nothing else writes them.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from clearing.ledger import AmountField, AppendOnlyModel


class Member(models.Model):
    """A clearing member firm. Its users act on its margin accounts and nobody else's."""

    code = models.SlugField(max_length=32, unique=True, help_text="Short stable identifier, e.g. ALPHA.")
    name = models.CharField(max_length=200, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} — {self.name}"


class Role(models.TextChoices):
    # A person whose staff or system role awaits a second security admin's approval, or was
    # taken away: signs in, sees nothing, may do nothing.
    NONE = "none", "No role"
    TRADER = "trader", "Member trader"
    VIEWER = "viewer", "Member viewer"
    OPS = "ops", "Venue ops"
    RISK_APPROVER = "risk_approver", "Venue risk approver"
    SECURITY_ADMIN = "security_admin", "Venue security admin"
    PRICE_SOURCE = "price_source", "Price source (system)"
    VENUE = "venue", "Trading venue (system)"
    CUSTODIAN = "custodian", "Custodian (system)"


MEMBER_ROLES = (Role.TRADER, Role.VIEWER)
# Venue staff reach the admin. Security admins administer users and roles and nothing else: they
# are not readers of member accounts (ACCOUNT_READER_ROLES, clearing.api.permissions.READERS).
STAFF_ROLES = (Role.OPS, Role.RISK_APPROVER, Role.SECURITY_ADMIN)
ACCOUNT_READER_ROLES = (Role.OPS, Role.RISK_APPROVER)
SYSTEM_ROLES = (Role.PRICE_SOURCE, Role.VENUE, Role.CUSTODIAN)
# Granting or taking away one of these needs a second security admin (accounts.access).
PRIVILEGED_ROLES = STAFF_ROLES + SYSTEM_ROLES


class User(AbstractUser):
    """A person or an external system. Member users belong to exactly one member; venue staff and
    system users belong to none. What a role may do is defined in ``accounts.roles``."""

    role = models.CharField(max_length=20, choices=Role.choices)
    member = models.ForeignKey(Member, on_delete=models.PROTECT, null=True, blank=True, related_name="users")

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="user_role_valid",
                condition=Q(role__in=[choice.value for choice in Role]),
            ),
            models.CheckConstraint(
                name="user_member_iff_member_role",
                condition=(Q(role__in=MEMBER_ROLES) & Q(member__isnull=False))
                | (~Q(role__in=MEMBER_ROLES) & Q(member__isnull=True)),
                violation_error_message="Member traders and viewers need a member; other roles have none.",
            ),
        ]

    def save(self, *args, **kwargs):
        # Only venue staff reach the admin; the flag follows the role so it can never drift.
        self.is_staff = self.is_superuser or self.role in STAFF_ROLES
        super().save(*args, **kwargs)

    @property
    def is_member_user(self) -> bool:
        return self.role in MEMBER_ROLES

    # Django ends a user's sessions when their password changes (the session keeps this hash). The
    # role is bound in too, so that a role change ends every open session of the user at once: a
    # demoted ops user is signed out, a promoted one signs in again (staff session length, second
    # factor) before acting with the new role.
    def _session_hash(self, secret=None) -> str:
        return salted_hmac(
            "accounts.User.session_hash", f"{self.password}\x00{self.role}", secret=secret, algorithm="sha256"
        ).hexdigest()

    def get_session_auth_hash(self) -> str:
        return self._session_hash()

    def get_session_auth_fallback_hash(self):
        for fallback_secret in settings.SECRET_KEY_FALLBACKS:
            yield self._session_hash(secret=fallback_secret)


class MarginMode(models.TextChoices):
    ISOLATED = "isolated", "Isolated"
    CROSS = "cross", "Cross"
    PORTFOLIO = "portfolio", "Portfolio"


class AccountKind(models.TextChoices):
    MEMBER = "member", "Member account"
    HOUSE = "house", "Venue house (liquidation) account"
    INSURANCE_FUND = "insurance_fund", "Insurance fund"
    # A member's funding account margins nothing: it holds collateral that the member's band
    # policies move into and out of its margin accounts (``agents``). No position is ever booked
    # into it (``accounts.trading``); sweeps value it as collateral only and never call it.
    FUNDING = "funding", "Funding account"


# The venue's own accounts: one of each kind (a database constraint).
VENUE_KINDS = (AccountKind.HOUSE, AccountKind.INSURANCE_FUND)
# A member's own accounts: its margin accounts and its funding account.
MEMBER_KINDS = (AccountKind.MEMBER, AccountKind.FUNDING)


class MarginAccount(models.Model):
    """One margin account collateralises all of its positions with all of its collateral.

    The venue itself holds two special accounts (one each, enforced by the database): the house
    account that takes over liquidated positions, and the insurance fund that receives liquidation
    fees and covers deficits. Neither is margin-called nor liquidated. A member may also hold one
    funding account (``AccountKind.FUNDING``), which margins nothing and is never called either.
    """

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="accounts")
    code = models.SlugField(
        max_length=40, unique=True, help_text="Stable identifier used by external systems."
    )
    name = models.CharField(max_length=200, blank=True)
    mode = models.CharField(max_length=10, choices=MarginMode.choices, default=MarginMode.PORTFOLIO)
    kind = models.CharField(max_length=20, choices=AccountKind.choices, default=AccountKind.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                name="marginaccount_kind_valid",
                condition=Q(kind__in=[choice.value for choice in AccountKind]),
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(kind__in=[kind.value for kind in VENUE_KINDS]),
                name="marginaccount_one_house_and_one_fund",
            ),
            models.UniqueConstraint(
                fields=["member"], condition=Q(kind="funding"), name="marginaccount_one_funding_per_member"
            ),
            models.CheckConstraint(
                name="marginaccount_mode_valid",
                condition=Q(mode__in=[choice.value for choice in MarginMode]),
            ),
        ]

    def __str__(self) -> str:
        return self.code


class Asset(models.Model):
    """A collateral asset. Linked to an underlying, it is valued at that underlying's index price."""

    symbol = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=100)
    underlying = models.ForeignKey(
        "clearing.Underlying", on_delete=models.PROTECT, null=True, blank=True, related_name="linked_assets"
    )
    decimals = models.PositiveSmallIntegerField(default=8, help_text="Decimal places accepted in movements.")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return self.symbol


class MovementKind(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    PREMIUM = "premium", "Option premium"
    REALISED_PNL = "realised_pnl", "Realised P&L"
    FEE = "fee", "Fee"
    LIQUIDATION_FEE = "liquidation_fee", "Liquidation fee"
    DEFICIT_COVER = "deficit_cover", "Deficit covered by the insurance fund"
    # A custody withdrawal debits the balance when it is requested (so equity excludes it from
    # then on) and credits it back if custody reports the payment failed.
    WITHDRAWAL_RESERVE = "withdrawal_reserve", "Withdrawal reserved (requested)"
    WITHDRAWAL_RELEASE = "withdrawal_release", "Withdrawal released (failed)"
    # A band policy's internal transfer between a member's funding account and one of its margin
    # accounts: a pair of movements (one out, one in) written in one transaction (``agents``).
    AUTO_TRANSFER = "auto_transfer", "Automatic transfer (band policy)"


class CollateralMovement(AppendOnlyModel):
    """An immutable ledger entry: a signed change of one asset's balance in one account."""

    account = models.ForeignKey(MarginAccount, on_delete=models.PROTECT, related_name="movements")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="movements")
    kind = models.CharField(max_length=20, choices=MovementKind.choices)
    amount = AmountField(help_text="Signed quantity of the asset: positive in, negative out.")
    trade = models.ForeignKey(
        "clearing.Trade", on_delete=models.PROTECT, null=True, blank=True, related_name="movements"
    )
    reference = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="movement_kind_valid", condition=Q(kind__in=[c.value for c in MovementKind])
            ),
            models.CheckConstraint(name="movement_amount_nonzero", condition=~Q(amount=0)),
            models.CheckConstraint(
                name="movement_deposit_positive", condition=~Q(kind=MovementKind.DEPOSIT) | Q(amount__gt=0)
            ),
            models.CheckConstraint(
                name="movement_withdrawal_negative",
                condition=~Q(kind=MovementKind.WITHDRAWAL) | Q(amount__lt=0),
            ),
            models.CheckConstraint(
                name="movement_reserve_negative",
                condition=~Q(kind=MovementKind.WITHDRAWAL_RESERVE) | Q(amount__lt=0),
            ),
            models.CheckConstraint(
                name="movement_release_positive",
                condition=~Q(kind=MovementKind.WITHDRAWAL_RELEASE) | Q(amount__gt=0),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.asset_id} on {self.account_id}"


class CollateralBalance(models.Model):
    """The running balance of one asset in one account: the sum of its movements (may be negative,
    i.e. borrowed, after losses are settled in the settlement asset)."""

    account = models.ForeignKey(MarginAccount, on_delete=models.PROTECT, related_name="balances")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="balances")
    amount = AmountField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_id", "asset__symbol"]
        constraints = [
            models.UniqueConstraint(fields=["account", "asset"], name="balance_one_row_per_account_asset"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}/{self.asset_id}: {self.amount}"


class ApiToken(models.Model):
    """A bearer token acting as its user. Only a SHA-256 digest of the secret is stored; the token
    itself is shown once, when issued."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True, help_text="Public part, to recognise a token.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# --- Custody: collateral in and out in two steps -----------------------------------------------
#
# Money reaches or leaves an account only through custody. A member *announces* a deposit (pending:
# shown, never counted) and the custodian *confirms* it with the external reference of the money
# that arrived; only the confirmation credits the account. A member *requests* a withdrawal: the
# margin check runs and the amount is reserved at once (a ``withdrawal_reserve`` movement); the
# custodian then marks it ``sent`` or ``failed`` (the reservation is released).
#
# Every row below is append-only (model and database triggers, migration
# ``0006_custody_append_only``). A request's state is derived from its one terminal step: the step
# row is one-to-one with its request, so the database itself makes two terminal steps impossible.


class DepositOrigin(models.TextChoices):
    ANNOUNCED = "announced", "Announced by the member"
    OBSERVED = "observed", "Observed by the custodian"


class DepositState(models.TextChoices):
    """Derived: ``pending`` until a step exists, then the step's kind."""

    PENDING = "pending", "Pending (announced, not credited)"
    CONFIRMED = "confirmed", "Confirmed and credited"
    EXPIRED = "expired", "Expired unconfirmed"


class DepositStepKind(models.TextChoices):
    CONFIRMED = "confirmed", "Confirmed and credited"
    EXPIRED = "expired", "Expired unconfirmed"


class Deposit(AppendOnlyModel):
    """A deposit as it was announced by a member, or as the custodian observed it arrive."""

    account = models.ForeignKey(MarginAccount, on_delete=models.PROTECT, related_name="deposits")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = AmountField(help_text="Units of the asset announced (or observed).")
    origin = models.CharField(max_length=10, choices=DepositOrigin.choices)
    note = models.CharField(max_length=200, blank=True, help_text="The member's own words (sender, wallet).")
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="An announcement not confirmed by then expires."
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(name="deposit_amount_positive", condition=Q(amount__gt=0)),
            models.CheckConstraint(name="deposit_origin_valid", condition=Q(origin__in=DepositOrigin.values)),
            models.CheckConstraint(
                name="deposit_expiry_iff_announced",
                condition=(Q(origin=DepositOrigin.ANNOUNCED) & Q(expires_at__isnull=False))
                | (Q(origin=DepositOrigin.OBSERVED) & Q(expires_at__isnull=True)),
            ),
        ]

    def __str__(self) -> str:
        return f"deposit #{self.pk} {self.amount} {self.asset_id} to {self.account_id}"

    @property
    def step_or_none(self) -> DepositStep | None:
        # A missing reverse one-to-one raises RelatedObjectDoesNotExist, an AttributeError.
        return getattr(self, "step", None)

    @property
    def state(self) -> str:
        step = self.step_or_none
        return DepositState.PENDING if step is None else step.kind


class DepositStep(AppendOnlyModel):
    """The one terminal step of a deposit: confirmed (with the movement that credited it) or expired."""

    # One-to-one: a second terminal step for the same deposit is refused by the database.
    deposit = models.OneToOneField(Deposit, on_delete=models.PROTECT, related_name="step")
    kind = models.CharField(max_length=10, choices=DepositStepKind.choices)
    # The deposit's asset again, so the database can keep each external reference unique per asset.
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    reference = models.CharField(
        max_length=200, blank=True, help_text="Transaction hash or bank reference of the money received."
    )
    movement = models.OneToOneField(
        CollateralMovement, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="depositstep_kind_valid", condition=Q(kind__in=DepositStepKind.values)
            ),
            models.CheckConstraint(
                name="depositstep_confirmed_has_reference_and_credit",
                condition=~Q(kind=DepositStepKind.CONFIRMED) | (~Q(reference="") & Q(movement__isnull=False)),
            ),
            models.CheckConstraint(
                name="depositstep_expired_credits_nothing",
                condition=~Q(kind=DepositStepKind.EXPIRED) | Q(movement__isnull=True),
            ),
            # The same money cannot be credited twice: one confirmation per reference and asset.
            models.UniqueConstraint(
                fields=["asset", "reference"],
                condition=Q(kind=DepositStepKind.CONFIRMED),
                name="depositstep_reference_unique_per_asset",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} deposit #{self.deposit_id}"


class WithdrawalState(models.TextChoices):
    """Derived: ``requested`` (reserved) until a step exists, then the step's kind."""

    REQUESTED = "requested", "Requested (amount reserved)"
    SENT = "sent", "Sent by custody"
    FAILED = "failed", "Failed (reservation released)"


class WithdrawalStepKind(models.TextChoices):
    SENT = "sent", "Sent by custody"
    FAILED = "failed", "Failed (reservation released)"


class Withdrawal(AppendOnlyModel):
    """A withdrawal request, accepted by the margin check; its amount is reserved by
    ``reservation`` (a ``withdrawal_reserve`` movement written in the same transaction)."""

    account = models.ForeignKey(MarginAccount, on_delete=models.PROTECT, related_name="withdrawals")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = AmountField(help_text="Units of the asset requested.")
    destination = models.CharField(max_length=200, blank=True, help_text="Where custody is to send it.")
    reservation = models.OneToOneField(CollateralMovement, on_delete=models.PROTECT, related_name="+")
    requested_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(name="withdrawal_amount_positive", condition=Q(amount__gt=0))]

    def __str__(self) -> str:
        return f"withdrawal #{self.pk} {self.amount} {self.asset_id} from {self.account_id}"

    @property
    def step_or_none(self) -> WithdrawalStep | None:
        return getattr(self, "step", None)

    @property
    def state(self) -> str:
        step = self.step_or_none
        return WithdrawalState.REQUESTED if step is None else step.kind


class WithdrawalStep(AppendOnlyModel):
    """The one terminal step of a withdrawal: sent (with custody's reference) or failed (with the
    movement that released the reservation)."""

    withdrawal = models.OneToOneField(Withdrawal, on_delete=models.PROTECT, related_name="step")
    kind = models.CharField(max_length=10, choices=WithdrawalStepKind.choices)
    reference = models.CharField(max_length=200, blank=True, help_text="Transaction hash or bank reference.")
    reason = models.CharField(max_length=500, blank=True, help_text="Why custody could not send it.")
    release = models.OneToOneField(
        CollateralMovement, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="withdrawalstep_kind_valid", condition=Q(kind__in=WithdrawalStepKind.values)
            ),
            models.CheckConstraint(
                name="withdrawalstep_sent_has_reference",
                condition=~Q(kind=WithdrawalStepKind.SENT) | (~Q(reference="") & Q(release__isnull=True)),
            ),
            models.CheckConstraint(
                name="withdrawalstep_failed_releases",
                condition=~Q(kind=WithdrawalStepKind.FAILED) | (~Q(reason="") & Q(release__isnull=False)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} withdrawal #{self.withdrawal_id}"


class FundDecision(models.TextChoices):
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class FundWithdrawalProposal(AppendOnlyModel):
    """Ops propose to move money out of the insurance fund; a risk approver other than the
    proposer decides (``FundWithdrawalDecision``). Only an approval creates the custody request."""

    account = models.ForeignKey(MarginAccount, on_delete=models.PROTECT, related_name="+")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = AmountField()
    reason = models.TextField(
        help_text="Why the money leaves the fund (shown to the approver, kept for ever)."
    )
    destination = models.CharField(max_length=200, blank=True, help_text="Where custody is to send it.")
    proposed_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        verbose_name = "insurance-fund withdrawal"
        permissions = [
            ("approve_fundwithdrawalproposal", "Can approve or reject an insurance-fund withdrawal")
        ]
        constraints = [
            models.CheckConstraint(name="fundwithdrawal_amount_positive", condition=Q(amount__gt=0)),
            models.CheckConstraint(name="fundwithdrawal_reason_given", condition=~Q(reason="")),
        ]

    def __str__(self) -> str:
        return f"insurance-fund withdrawal #{self.pk}: {self.amount} {self.asset_id}"

    @property
    def decision_or_none(self) -> FundWithdrawalDecision | None:
        return getattr(self, "decision", None)

    @property
    def state(self) -> str:
        decision = self.decision_or_none
        return "proposed" if decision is None else decision.decision


class FundWithdrawalDecision(AppendOnlyModel):
    """The decision on a proposal, by a risk approver who is not its proposer (the database refuses
    a self-approval: the proposer is copied here for the check)."""

    proposal = models.OneToOneField(FundWithdrawalProposal, on_delete=models.PROTECT, related_name="decision")
    decision = models.CharField(max_length=10, choices=FundDecision.choices)
    proposed_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    decided_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    note = models.TextField(blank=True)
    withdrawal = models.OneToOneField(
        Withdrawal, on_delete=models.PROTECT, null=True, blank=True, related_name="fund_decision"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(name="funddecision_valid", condition=Q(decision__in=FundDecision.values)),
            models.CheckConstraint(
                name="funddecision_four_eyes",
                condition=~Q(decided_by=models.F("proposed_by")),
                violation_error_message="The proposer of an insurance-fund withdrawal cannot decide it.",
            ),
            models.CheckConstraint(
                name="funddecision_approval_iff_withdrawal",
                condition=(Q(decision=FundDecision.APPROVED) & Q(withdrawal__isnull=False))
                | (Q(decision=FundDecision.REJECTED) & Q(withdrawal__isnull=True) & ~Q(note="")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.decision} insurance-fund withdrawal #{self.proposal_id}"


class GrantStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"


class RoleGrant(models.Model):
    """A proposal to change a user's role where a staff or system role is given or taken away.

    It takes effect only when a second security admin approves it: the approver is neither the
    proposer nor the user concerned (checked by ``accounts.access`` and by the database). Proposals
    are never deleted; every step is also in the ``SecurityEvent`` log.
    """

    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="role_grants")
    role = models.CharField(max_length=20, choices=Role.choices, help_text="The role once approved.")
    member = models.ForeignKey(
        Member,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="For a member role only.",
    )
    from_role = models.CharField(max_length=20, choices=Role.choices, help_text="The role when proposed.")
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=GrantStatus.choices, default=GrantStatus.PROPOSED)
    proposed_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    proposed_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-proposed_at", "-pk"]
        permissions = [("approve_rolegrant", "Can approve or reject role grants")]
        constraints = [
            models.CheckConstraint(
                name="rolegrant_status_valid", condition=Q(status__in=[c.value for c in GrantStatus])
            ),
            models.CheckConstraint(
                name="rolegrant_role_valid", condition=Q(role__in=[c.value for c in Role])
            ),
            models.CheckConstraint(
                name="rolegrant_member_iff_member_role",
                condition=(Q(role__in=MEMBER_ROLES) & Q(member__isnull=False))
                | (~Q(role__in=MEMBER_ROLES) & Q(member__isnull=True)),
            ),
            # One open proposal per user: approvers never have to choose between two.
            models.UniqueConstraint(
                fields=["user"], condition=Q(status="proposed"), name="rolegrant_one_open_per_user"
            ),
            models.CheckConstraint(
                name="rolegrant_not_for_oneself",
                condition=~Q(proposed_by=F("user")),
                violation_error_message="Nobody can grant a role to themselves.",
            ),
            models.CheckConstraint(
                name="rolegrant_approved_by_a_second_person",
                condition=~Q(status="approved")
                | (Q(decided_by__isnull=False) & ~Q(decided_by=F("proposed_by")) & ~Q(decided_by=F("user"))),
                violation_error_message="A grant is approved by someone other than its proposer and grantee.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.get_role_display()} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status == GrantStatus.PROPOSED


class SecurityAction(models.TextChoices):
    USER_CREATED = "user_created", "User created"
    USER_CHANGED = "user_changed", "User details changed"
    ROLE_SET = "role_set", "Member role set"
    GRANT_PROPOSED = "grant_proposed", "Role grant proposed"
    GRANT_APPROVED = "grant_approved", "Role grant approved"
    GRANT_REJECTED = "grant_rejected", "Role grant rejected"
    GRANT_WITHDRAWN = "grant_withdrawn", "Role grant withdrawn"
    PASSWORD_SET = "password_set", "Password set by another user"
    TOKEN_ISSUED = "token_issued", "API token issued"
    TOKEN_REVOKED = "token_revoked", "API token revoked"
    OTP_ENROLLED = "otp_enrolled", "Second factor enrolled"
    OTP_REMOVED = "otp_removed", "Second factor removed"


class SecurityEvent(AppendOnlyModel):
    """The audit log of user and role administration: who did what to whom, when and why.

    Append-only (the model and the database refuse updates and deletes). ``actor`` is null for the
    operator at the command line (``manage.py``) and for the system. Never holds a secret.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    action = models.CharField(max_length=20, choices=SecurityAction.choices)
    user = models.ForeignKey(
        User,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="security_events",
        help_text="The user concerned.",
    )
    grant = models.ForeignKey(
        RoleGrant, on_delete=models.PROTECT, null=True, blank=True, related_name="events"
    )
    role = models.CharField(max_length=20, blank=True)
    note = models.TextField(blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        constraints = [
            models.CheckConstraint(
                name="securityevent_action_valid", condition=Q(action__in=[c.value for c in SecurityAction])
            ),
        ]

    def __str__(self) -> str:
        who = self.actor.username if self.actor_id else "operator"
        return f"{self.get_action_display()} by {who} at {self.at:%Y-%m-%d %H:%M:%S}"
