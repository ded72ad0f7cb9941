"""The official AuthForge Python SDK 2.0 (`authforge-sdk` on PyPI) against the real licensd."""

import datetime
import os
import tempfile
import time

from authforge import AuthForgeClient
from conftest import Licensd, self_signed_certificate


class Failures:
    """Collects on_failure calls as (reason, server code)."""

    def __init__(self):
        self.seen = []

    def __call__(self, reason, exc):
        self.seen.append((reason, getattr(exc, "code", None)))


def client(licensd, hwid, keys=None, failures=None, **options):
    return AuthForgeClient(
        licensd.app["appId"],
        licensd.app["appSecret"],
        keys or licensd.app["publicKey"],
        api_base_url=licensd.base,
        hwid_override=hwid,
        ttl_seconds=3600,
        on_failure=failures or Failures(),
        **options,
    )


def in_seconds(seconds):
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_login_delivers_variables_and_a_signed_session(licensd):
    licensd.api("PUT", f"/v1/apps/{licensd.app['appId']}/variables", {"motd": "hello", "max": 3})
    key = licensd.license(maxHwidSlots=2, label="py order")
    licensd.api("PUT", f"/v1/licenses/{key}/variables", {"plan": "pro"})
    sdk = client(licensd, "py-login")
    assert sdk.login(key) is True
    assert sdk.get_app_variables() == {"motd": "hello", "max": 3}
    assert sdk.get_license_variables() == {"plan": "pro"}
    session = sdk.get_session_data()
    assert session["licenseLabel"] == "py order" and session["hwidCount"] == 1
    assert session["licenseExpiresAt"] is None
    assert abs(session["expiresIn"] - (time.time() + 3600)) < 30
    assert client(licensd, "py-login").validate_license(key)["valid"] is True
    sdk.logout()


def test_failures_carry_the_server_codes(licensd):
    failures = Failures()
    assert client(licensd, "x", failures=failures).login("AAAA-BBBB-CCCC-DDDD") is False
    assert failures.seen == [("login_failed", "invalid_key")]


def test_online_heartbeat_sees_a_revocation(licensd):
    key = licensd.license()
    failures = Failures()
    sdk = client(licensd, "py-heartbeat", failures=failures, online_heartbeat=True, heartbeat_interval=10)
    assert sdk.login(key)
    first = sdk.get_session_data()["expiresIn"]
    deadline = time.time() + 30
    while sdk.get_session_data()["expiresIn"] <= first and time.time() < deadline:
        time.sleep(0.25)
    assert sdk.get_session_data()["expiresIn"] > first, "a heartbeat refreshed the session"
    licensd.api("PUT", f"/v1/licenses/{key}", {"action": "revoke"})
    deadline = time.time() + 30
    while not failures.seen and time.time() < deadline:
        time.sleep(0.25)
    assert [code for _, code in failures.seen][:1] == ["revoked"], failures.seen
    assert not sdk.is_authenticated()


def test_hwid_slots_reset_and_expiry(licensd):
    key = licensd.license(maxHwidSlots=1, expiresAt=in_seconds(3600))
    assert client(licensd, "py-a").login(key)
    failures = Failures()
    assert client(licensd, "py-b", failures=failures).login(key) is False
    assert failures.seen[0][1] == "hwid_mismatch"
    licensd.api("PUT", f"/v1/licenses/{key}", {"action": "reset-hwid"})
    assert client(licensd, "py-b").login(key)

    short = licensd.license(expiresAt=in_seconds(2))
    time.sleep(2.5)
    failures = Failures()
    assert client(licensd, "py-a", failures=failures).login(short) is False
    assert failures.seen[0][1] == "expired"


def test_blacklist_and_self_ban(licensd):
    key = licensd.license(maxHwidSlots=5)
    app_id = licensd.app["appId"]
    licensd.api("PUT", f"/v1/apps/{app_id}/security", {"hwidBlacklist": ["py-pirate"]})
    failures = Failures()
    assert client(licensd, "py-pirate", failures=failures).login(key) is False
    assert failures.seen[0][1] == "blocked"

    pre = client(licensd, "py-cracked")
    assert pre.self_ban(license_key=key, revoke_license=False, blacklist_ip=False)["status"] == "success"
    post = client(licensd, "py-tampered")
    assert post.login(key)
    post.self_ban(blacklist_ip=False)
    license = licensd.api("GET", f"/v1/licenses/{key}")
    assert license["status"] == "revoked"
    security = licensd.api("GET", f"/v1/apps/{app_id}/security")
    assert {"py-cracked", "py-tampered"} <= set(security["hwidBlacklist"])
    licensd.api("PUT", f"/v1/apps/{app_id}/security", {"hwidBlacklist": []})


def test_offline_activation_and_login_from_file(licensd):
    licensd.api("PUT", f"/v1/apps/{licensd.app['appId']}/settings", {"offlineActivation": True})
    key = licensd.license(maxHwidSlots=1)
    path = os.path.join(tempfile.mkdtemp(), "license.authforge")
    assert client(licensd, "py-offline").activate_offline(key, path)
    with open(path) as f:
        first = f.read()
    assert client(licensd, "py-offline").activate_offline(key, path)
    with open(path) as f:
        assert f.read() == first, "the same machine gets the byte-identical file"
    offline = AuthForgeClient(
        licensd.app["appId"], None, licensd.app["publicKey"], api_base_url="http://127.0.0.1:9",
        hwid_override="py-offline", on_failure=Failures(),
    )
    assert offline.login_from_file(path)
    assert offline.get_offline_license()["license_key"] == key


def test_key_rotation_with_two_trusted_keys(licensd):
    key = licensd.license(maxHwidSlots=3)
    old = licensd.app["publicKey"]
    keys = f"/v1/apps/{licensd.app['appId']}/signing-keys"
    added = licensd.api("POST", keys, {})
    new = added["signingKeys"][0]["publicKey"]
    assert added["signingKeys"][0]["state"] == "verifying"
    assert client(licensd, "py-rot", keys=old).login(key), "the old key signs until the new one is promoted"
    licensd.api("POST", f"{keys}/{added['signingKeys'][0]['keyId']}/promote", {})
    failures = Failures()
    assert client(licensd, "py-rot", keys=old, failures=failures).login(key) is False
    assert failures.seen, "an old-key-only client rejects the new signature"
    assert client(licensd, "py-rot", keys=[new, old]).login(key)


def test_the_sdk_speaks_https_to_the_native_tls_listener(licensd, monkeypatch):
    cert, key = self_signed_certificate(licensd.data_dir)
    # The same data folder served over HTTPS only. One server at a time holds a data folder's
    # lock, so the plain-HTTP server steps aside for this test and comes back after it.
    licensd.stop()
    tls = Licensd(licensd.data_dir)
    tls.api_key, tls.app = licensd.api_key, licensd.app
    tls.start(LICENSD_TLS_CERT=cert, LICENSD_TLS_KEY=key)
    try:
        assert tls.base.startswith("https://")
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        license_key = tls.license()
        current = [k["publicKey"] for k in tls.api("GET", f"/v1/apps/{tls.app['appId']}")["publicKeys"]]
        failures = Failures()
        assert client(tls, "py-tls", keys=current, failures=failures).login(license_key), failures.seen
    finally:
        tls.stop()
        licensd.start()
