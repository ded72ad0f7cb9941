"""Starts the real licensd binary (LICENSD_BIN) and provisions a merchant for the SDK tests."""

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request

import pytest

RELAXED = {
    "LICENSD_VALIDATE_PER_IP": "10000",
    "LICENSD_VALIDATE_PER_KEY": "10000",
    "LICENSD_HEARTBEAT_PER_KEY": "10000",
    "LICENSD_SELFBAN_PER_IP": "10000",
    "LICENSD_SELFBAN_PER_KEY": "10000",
    "LICENSD_API_BURST": "100000",
    "LICENSD_API_PER_SECOND": "100000",
}


class Licensd:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.env = dict(os.environ, LICENSD_DATA_DIR=data_dir, LICENSD_LOG="warn", **RELAXED)
        self.env.pop("LICENSD_DATABASE_URL", None)
        self.env.pop("LICENSD_MASTER_KEY", None)
        self.binary = os.environ["LICENSD_BIN"]

    def cli(self, *args):
        out = subprocess.run([self.binary, *args], env=self.env, check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    def start(self, **extra_env):
        env = dict(self.env, LICENSD_LISTEN="127.0.0.1:0", **extra_env)
        self.process = subprocess.Popen([self.binary, "serve"], env=env, stdout=subprocess.PIPE, text=True)
        listening = json.loads(self.process.stdout.readline())
        self.base = listening["scheme"] + "://" + listening["listening"]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)

    def api(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + self.api_key)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def license(self, **fields):
        created = self.api("POST", "/v1/licenses", dict(appId=self.app["appId"], **fields))
        return created["licenses"][0]["licenseKey"]


def self_signed_certificate(folder):
    """A certificate for 127.0.0.1 and its key, made with the openssl command line."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def licensd():
    data_dir = tempfile.mkdtemp(prefix="licensd-py-")
    server = Licensd(data_dir)
    account = server.cli("account", "create", "--email", "python@example.com")
    server.cli("credits", "grant", "--account", account["accountId"], "--amount", "10000")
    server.api_key = account["apiKey"]
    server.start()
    server.app = server.api("POST", "/v1/apps", {"name": "Python SDK app"})
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
