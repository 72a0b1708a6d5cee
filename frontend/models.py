"""The member web app's own models: the target band a member sets on an account."""

from __future__ import annotations

from django.db import models


class BandState(models.TextChoices):
    INSIDE = "inside", "Inside"
    BELOW = "below", "Below the band"
    ABOVE = "above", "Above the band"


class TargetBand(models.Model):
    """The band a member wants an account's collateralisation ratio (equity / MM, the engine's
    ``margin_ratio``) to stay in. ``state`` is where the last sweep found it, so an alert is pushed
    once when it leaves the band and once when it comes back, not after every sweep."""

    account = models.OneToOneField(
        "accounts.MarginAccount", on_delete=models.CASCADE, primary_key=True, related_name="target_band"
    )
    lower = models.DecimalField(max_digits=12, decimal_places=4, help_text="Lowest ratio wanted, e.g. 1.5.")
    upper = models.DecimalField(max_digits=12, decimal_places=4, help_text="Highest ratio wanted, e.g. 4.")
    state = models.CharField(max_length=6, choices=BandState.choices, default=BandState.INSIDE)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(name="targetband_lower_positive", condition=models.Q(lower__gt=0)),
            models.CheckConstraint(
                name="targetband_upper_above_lower", condition=models.Q(upper__gt=models.F("lower"))
            ),
            models.CheckConstraint(
                name="targetband_state_valid", condition=models.Q(state__in=["inside", "below", "above"])
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.lower}–{self.upper}"

    def state_for(self, ratio: float | None) -> str:
        """Where ``ratio`` lies; no ratio (MM = 0: nothing at risk) counts as above the band."""
        if ratio is None:
            return BandState.ABOVE
        if ratio < float(self.lower):
            return BandState.BELOW
        if ratio > float(self.upper):
            return BandState.ABOVE
        return BandState.INSIDE
