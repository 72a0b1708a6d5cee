"""What each role may do in the admin, as Django permission strings (``app_label.codename``).

Roles are defined in code, not in editable groups, so that the separation between ops (who
maintain reference data and propose parameter changes) and risk approvers (who approve them) is
reviewed like any other code change. Ledgers (trades, collateral movements) and derived state
(positions, balances) are view-only for everyone: they change only through services.

Users, roles, passwords and API tokens are administered by security admins alone, never by ops or
risk approvers: whoever can make users can make themselves a second approver. Security admins in
turn grant staff and system roles only with a second security admin's approval (``accounts.access``).
"""

from __future__ import annotations

from accounts.models import Role

_VIEW_ALL = {
    f"{app}.view_{model}"
    for app, models in {
        "accounts": [
            "member",
            "user",
            "marginaccount",
            "asset",
            "collateralmovement",
            "collateralbalance",
            "apitoken",
            "deposit",
            "depositstep",
            "withdrawal",
            "withdrawalstep",
            "fundwithdrawalproposal",
            "fundwithdrawaldecision",
        ],
        "clearing": ["underlying", "instrument", "trade", "position"],
    }.items()
    for model in models
}

_OPS_EDIT = {
    f"{app}.{action}_{model}"
    for app, models in {
        "accounts": ["member", "marginaccount", "asset"],
        "clearing": ["underlying", "instrument"],
    }.items()
    for model in models
    for action in ("add", "change")
} | {"accounts.change_apitoken"}  # revoke a token (a leak is an operational emergency); never issue one

# User and role administration (accounts.access): create users, set member roles and member users'
# passwords, issue tokens for member and system users, propose role grants and approve other
# security admins' proposals, remove a lost second factor, unlock a locked-out sign-in (django-axes).
# Security admins see no member account, trade or ledger: administering people is not reading books.
_SECURITY_ADMIN = {
    "accounts.view_user",
    "accounts.add_user",
    "accounts.change_user",
    "accounts.view_member",
    "accounts.view_apitoken",
    "accounts.add_apitoken",
    "accounts.change_apitoken",
    "accounts.view_rolegrant",
    "accounts.add_rolegrant",
    "accounts.approve_rolegrant",
    "accounts.view_securityevent",
    "otp_totp.view_totpdevice",
    "otp_totp.delete_totpdevice",
    "axes.view_accessattempt",
    "axes.delete_accessattempt",
    "axes.view_accesslog",
    "axes.view_accessfailurelog",
}

# Risk parameter governance (maker-checker): ops draft and propose parameter sets and edit their
# rows while drafts; risk approvers view them and approve or reject proposals. Nobody deletes.
_PARAMETERS_VIEW = {
    f"riskengine.view_{model}"
    for model in (
        "parameterset",
        "underlyingparameters",
        "assetparameters",
        "haircutbracket",
        "stressscenario",
        "parametersetevent",
    )
}
_PARAMETERS_EDIT = {
    f"riskengine.{action}_{model}"
    for model in (
        "parameterset",
        "underlyingparameters",
        "assetparameters",
        "haircutbracket",
        "stressscenario",
    )
    for action in ("add", "change")
}

# Monitoring (the ops dashboard's admin pages): the oracle's sources, ledgers, states and alerts,
# and what sweeps computed and set in motion. Ops may switch a price source off, resolve alerts
# and confirm a move the circuit breaker holds (the last two are not model permissions: the role
# backend grants the strings); the ledgers and derived rows stay read-only.
_MONITORING_VIEW = {
    f"{app}.view_{model}"
    for app, models in {
        "marketdata": ["pricesource", "priceobservation", "indexprice", "indexstate"],
        "sweeps": [
            "sweep",
            "sweepshard",
            "marginsnapshot",
            "accountmargin",
            "margincall",
            "margincallevent",
            "liquidation",
        ],
        # Ops alerts (clearing.ops.alerts) and the deficits the insurance fund could not cover
        # (riskengine.sweeps.insurance), read-only.
        "ops": ["opsalert", "uncovereddeficit"],
        # Model validation (riskengine.validation): runs and their per-account results.
        "riskengine": ["validationrun", "validationshard", "accountbacktest", "accountstress"],
    }.items()
    for model in models
}
# Both ops and risk approvers may start a validation run now (it changes nothing but the reports).
_VALIDATION_RUN = {"riskengine.run_validationrun"}
_OPS_MONITORING = {
    "marketdata.change_pricesource",
    "ops.resolve_opsalert",
    "marketdata.confirm_indexprice",
}

# The members' automated agents (agents): every venue reader sees policies, transfers, hedge
# requests, deliveries and the changes log; ops suspend and resume a policy (with a reason, through
# agents.services, which audits it). Nobody edits them here: members configure their own.
_AGENTS_VIEW = {
    f"agents.view_{model}"
    for model in (
        "bandpolicy",
        "autotransfer",
        "hedgepolicy",
        "hedgerequest",
        "hedgefill",
        "webhookendpoint",
        "webhookattempt",
        "policychange",
    )
}
_AGENTS_SUSPEND = {"agents.suspend_bandpolicy", "agents.suspend_hedgepolicy"}

# Custody: deposits and withdrawals move only through the custodian's API steps (view-only here).
# Money leaves the insurance fund by maker-checker: ops propose, a risk approver who is not the
# proposer approves or rejects (``accounts.custody``, ``riskengine.withdrawals``).
_FUND_PROPOSE = {"accounts.add_fundwithdrawalproposal"}
_FUND_APPROVE = {"accounts.approve_fundwithdrawalproposal"}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.OPS: frozenset(
        _VIEW_ALL
        | _OPS_EDIT
        | _PARAMETERS_VIEW
        | _PARAMETERS_EDIT
        | _MONITORING_VIEW
        | _OPS_MONITORING
        | _FUND_PROPOSE
        | _AGENTS_VIEW
        | _AGENTS_SUSPEND
        | _VALIDATION_RUN
    ),
    Role.RISK_APPROVER: frozenset(
        _VIEW_ALL
        | _PARAMETERS_VIEW
        | {"riskengine.approve_parameterset"}
        | _MONITORING_VIEW
        | _FUND_APPROVE
        | _AGENTS_VIEW
        | _VALIDATION_RUN
    ),
    Role.SECURITY_ADMIN: frozenset(_SECURITY_ADMIN),
    Role.NONE: frozenset(),
    Role.TRADER: frozenset(),
    Role.VIEWER: frozenset(),
    Role.PRICE_SOURCE: frozenset(),
    Role.VENUE: frozenset(),
    Role.CUSTODIAN: frozenset(),
}


def role_permissions(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())
