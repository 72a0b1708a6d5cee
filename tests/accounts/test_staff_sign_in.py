"""Signing in (issue #12): login throttling with lock-out and back-off on both login pages, the
staff second factor (TOTP) when STAFF_OTP_REQUIRED, and the staff session length."""

import re
import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth import SESSION_KEY
from django.db.models import F
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.checks import staff_second_factor_check
from accounts.models import Role, SecurityAction
from tests import factories

PASSWORD = "pw-Str0ng!"
MEMBER_LOGIN = "/login/"
ADMIN_LOGIN = "/admin/login/"


@pytest.fixture
def alice(member_a):
    return factories.user_make(username="alice", role=Role.TRADER, member=member_a)


@pytest.fixture
def ops(db):
    return factories.user_make(username="ops1", role=Role.OPS)


@pytest.fixture
def otp_required(settings):
    settings.STAFF_OTP_REQUIRED = True


def sign_in(client, page, username, password, **extra):
    return client.post(page, {"username": username, "password": password, **extra})


def signed_in(client) -> bool:
    return SESSION_KEY in client.session


def totp(device, steps_ahead: int = 0) -> str:
    """The code the authenticator app shows now (or ``steps_ahead`` time steps later)."""
    generator = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    generator.time = time.time() + steps_ahead * device.step
    return f"{generator.token():0{device.digits}d}"


def wrong_totp(device) -> str:
    """A code the device accepts at no time step within its tolerance."""
    accepted = {totp(device, steps) for steps in range(-device.tolerance, device.tolerance + 1)}
    return next(code for code in (f"{n:06d}" for n in range(10**6)) if code not in accepted)


def rewind_attempts(minutes: int) -> None:
    """As if the recorded failures had happened ``minutes`` earlier."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=minutes))


# --- Throttling --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "user_fixture"), [(MEMBER_LOGIN, "alice"), (ADMIN_LOGIN, "ops")], ids=["member", "admin"]
)
def test_the_sixth_wrong_password_locks_the_sign_in_even_for_the_right_password(
    client, request, page, user_fixture
):
    user = request.getfixturevalue(user_fixture)
    assert django_settings.AXES_FAILURE_LIMIT == 6
    for _ in range(5):
        assert sign_in(client, page, user.username, "guess").status_code == 200  # the form, again
    locked = sign_in(client, page, user.username, "guess")
    assert locked.status_code == 429
    assert "Sign-in locked" in locked.content.decode()
    response = sign_in(client, page, user.username, PASSWORD)
    assert response.status_code == 429
    assert not signed_in(client)


def test_five_wrong_passwords_still_let_the_right_one_in_and_success_clears_the_count(client, alice):
    for _ in range(5):
        sign_in(client, MEMBER_LOGIN, "alice", "guess")
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 302
    assert signed_in(client)
    assert not AccessAttempt.objects.exists()


def test_the_lock_is_per_username_and_address_so_nobody_locks_others_out(client, alice, member_a):
    bob = factories.user_make(username="bob", member=member_a)
    for _ in range(6):
        sign_in(client, MEMBER_LOGIN, "alice", "guess")
    # Another user from the same address, and the same user from another address, sign in.
    assert sign_in(client, MEMBER_LOGIN, bob.username, PASSWORD).status_code == 302
    client.logout()
    response = client.post(
        MEMBER_LOGIN, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="203.0.113.9"
    )
    assert response.status_code == 302


def test_the_lock_lifts_after_the_cool_off_and_each_further_attempt_doubles_it(client, alice):
    cool_off = django_settings.LOGIN_COOLOFF_MINUTES
    for _ in range(6):
        sign_in(client, MEMBER_LOGIN, "alice", "guess")
    rewind_attempts(cool_off + 1)
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 302

    client.logout()
    for _ in range(7):  # locked at the sixth, one more guess during the lock: twice the cool-off
        sign_in(client, MEMBER_LOGIN, "alice", "guess")
    rewind_attempts(cool_off + 1)
    # Still locked. The password is not even checked during a lock (that would tell a guesser when
    # they are right), so this attempt counts too: four times the cool-off, from now.
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 429
    rewind_attempts(4 * cool_off - 1)
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 429  # and now eight times
    rewind_attempts(8 * cool_off + 1)
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 302


def test_a_security_admin_lifts_a_lock_and_ops_cannot(client, alice):
    for _ in range(6):
        sign_in(client, MEMBER_LOGIN, "alice", "guess")
    attempt = AccessAttempt.objects.get()
    url = f"/admin/axes/accessattempt/{attempt.pk}/delete/"
    staff = factories.user_make(username="ops1", role=Role.OPS)
    client.force_login(staff)
    assert client.post(url, {"post": "yes"}).status_code == 403
    client.force_login(factories.user_make(username="sec1", role=Role.SECURITY_ADMIN))
    assert client.post(url, {"post": "yes"}).status_code == 302
    client.logout()
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 302


# --- Second factor -----------------------------------------------------------------------------


def test_without_the_requirement_staff_sign_in_with_a_password(client, ops):
    response = sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD)
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_staff_with_a_device_reach_the_admin_only_with_its_code(client, ops, otp_required):
    device = TOTPDevice.objects.create(user=ops, name="phone", confirmed=True)

    missing = sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD)
    assert missing.status_code == 200
    assert "Enter the code your authenticator app shows." in missing.content.decode()
    wrong = sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD, otp_token=wrong_totp(device))
    assert "That code is wrong" in wrong.content.decode()
    assert not signed_in(client)
    assert client.get("/admin/").status_code == 302

    time.sleep(1.1)  # after a wrong code the device refuses every code for a second (django-otp)

    assert sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD, otp_token=totp(device)).status_code == 302
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/member/").status_code == 200


def test_a_session_without_the_second_factor_reaches_neither_the_admin_nor_the_api(client, ops, otp_required):
    TOTPDevice.objects.create(user=ops, name="phone", confirmed=True)
    client.force_login(ops)  # a session from the password alone
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith(ADMIN_LOGIN)
    assert client.get("/api/v1/accounts/").status_code in (401, 403)
    assert client.get("/admin/dashboard/").status_code == 302


def test_staff_are_sent_to_the_admin_sign_in_from_the_member_page(client, ops, alice, otp_required):
    response = sign_in(client, MEMBER_LOGIN, "ops1", PASSWORD)
    assert response.status_code == 200
    assert "Venue staff sign in at /admin/" in response.content.decode()
    assert not signed_in(client)
    # Members are not asked for a second factor.
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 302
    assert client.get("/").status_code == 200


def test_staff_without_a_device_enrol_one_before_reaching_the_admin(client, ops, otp_required):
    response = sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/admin/otp/enrol/"
    assert client.get("/admin/").status_code == 302  # nothing but enrolment yet

    page = client.get("/admin/otp/enrol/")
    assert page["Cache-Control"].startswith("max-age=0")
    html = page.content.decode()
    secret = re.search(r'<code id="otp-secret">([A-Z2-7 ]+)</code>', html).group(1)
    assert "otpauth://totp/" in html
    device = TOTPDevice.objects.get(user=ops, confirmed=False)
    assert secret.replace(" ", "") in device.config_url

    # A reload shows a new secret, never the same one twice.
    client.get("/admin/otp/enrol/")
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    device = TOTPDevice.objects.get(user=ops, confirmed=False)

    wrong = client.post("/admin/otp/enrol/", {"otp_token": wrong_totp(device)})
    assert "That code is wrong" in wrong.content.decode()
    assert 'id="otp-secret"' not in wrong.content.decode()
    time.sleep(1.1)  # the device's pause after a wrong code
    assert client.post("/admin/otp/enrol/", {"otp_token": totp(device)}).status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    assert client.get("/admin/").status_code == 200
    assert ops.security_events.get().action == SecurityAction.OTP_ENROLLED

    # From now on the code is required, and the enrolment page is closed.
    client.logout()
    assert sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD).status_code == 200
    assert sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD, otp_token=totp(device, 1)).status_code == 302
    assert client.get("/admin/otp/enrol/")["Location"] == "/admin/"


def test_production_settings_require_the_second_factor(settings):
    settings.STAFF_OTP_REQUIRED = False
    assert [message.id for message in staff_second_factor_check(None)] == ["accounts.W001"]
    settings.STAFF_OTP_REQUIRED = True
    assert staff_second_factor_check(None) == []


# --- Session length ----------------------------------------------------------------------------


def test_staff_sessions_last_twelve_hours_and_members_keep_theirs(client, ops, alice):
    assert sign_in(client, ADMIN_LOGIN, "ops1", PASSWORD).status_code == 302
    assert client.session.get_expiry_age() == pytest.approx(12 * 60 * 60, abs=60)
    expires = client.session.get_expiry_date()
    assert expires - timezone.now() <= timedelta(hours=12)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    assert int(cookie["max-age"]) == pytest.approx(12 * 60 * 60, abs=60)

    client.logout()
    assert sign_in(client, MEMBER_LOGIN, "alice", PASSWORD).status_code == 302
    assert client.session.get_expiry_age() == django_settings.SESSION_COOKIE_AGE == 14 * 24 * 60 * 60
