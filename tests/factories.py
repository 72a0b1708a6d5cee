"""Test data builders, in one place. Each returns saved rows built through the real services
where a service exists, so tests exercise the same paths as production."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from accounts.models import Asset, MarginAccount, Member, Role, User
from accounts.services import user_create
from clearing.models import Instrument, InstrumentKind, OptionRight, Underlying


def member_make(*, code: str = "AAA", name: str | None = None) -> Member:
    return Member.objects.create(code=code, name=name or f"Member {code}")


def account_make(*, member: Member, code: str | None = None, mode: str = "portfolio") -> MarginAccount:
    code = code or f"{member.code}-{MarginAccount.objects.filter(member=member).count() + 1:02d}"
    return MarginAccount.objects.create(member=member, code=code, mode=mode)


def user_make(
    *, username: str, role: str = Role.TRADER, member: Member | None = None, password: str = "pw-Str0ng!"
) -> User:
    return user_create(username=username, password=password, role=role, member=member)


@dataclass
class Venue:
    btc: Underlying
    eth: Underlying
    btc_perp: Instrument
    btc_future: Instrument
    btc_call: Instrument
    eth_perp: Instrument
    usd: Asset
    usdc: Asset
    btc_asset: Asset


def venue_make() -> Venue:
    btc = Underlying.objects.create(symbol="BTC", name="Bitcoin")
    eth = Underlying.objects.create(symbol="ETH", name="Ether")
    expiry = (timezone.now() + timedelta(days=90)).replace(hour=8, minute=0, second=0, microsecond=0)
    return Venue(
        btc=btc,
        eth=eth,
        btc_perp=Instrument.objects.create(symbol="BTC-PERP", kind=InstrumentKind.PERPETUAL, underlying=btc),
        btc_future=Instrument.objects.create(
            symbol="BTC-FUT", kind=InstrumentKind.FUTURE, underlying=btc, expiry=expiry
        ),
        btc_call=Instrument.objects.create(
            symbol="BTC-70000-C",
            kind=InstrumentKind.OPTION,
            underlying=btc,
            expiry=expiry,
            strike=Decimal(70000),
            right=OptionRight.CALL,
        ),
        eth_perp=Instrument.objects.create(symbol="ETH-PERP", kind=InstrumentKind.PERPETUAL, underlying=eth),
        usd=Asset.objects.create(symbol="USD", name="US dollar", decimals=2),
        usdc=Asset.objects.create(symbol="USDC", name="USD Coin", decimals=6),
        btc_asset=Asset.objects.create(symbol="BTC", name="Bitcoin", underlying=btc, decimals=8),
    )


def aware(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)
