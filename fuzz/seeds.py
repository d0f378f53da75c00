#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora from fixtures/ (called by scripts/fuzz; standard library + openssl).

    seeds.py REPO_DIR CORPUS_DIR MAX_LEN

- hook_request: every hook request in fixtures/ (rules, review, review/second, real), compacted; a request
  still over MAX_LEN keeps fewer prefetch entries until it fits.
- fhir_reader: every draftOrders Bundle and prefetch value in those requests, and each entry's resource.
- jwt: tokens signed with the TEST-ONLY keys in fixtures/auth for the target's fixed "now" (mode byte '0'), and
  header/claims JSON pairs the target signs itself (mode bytes '1' ES384, '2' RS384). See fuzz_targets/jwt.rs.
- config: config/*.toml, and configurations trusting the test keys through jwks_file and inline jwks.

File names are content hashes, so running it again adds nothing twice.
"""
import base64
import copy
import glob
import hashlib
import json
import os
import subprocess
import sys
import time

repo, corpus, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])

NOW = int(time.time())  # for the minted tokens; the others say NOW, which the target replaces
ISSUER = "https://ehr.test.example"
AUD = "http://127.0.0.1:8080/cds-services/dry-needling-order-select"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) > max_len:
        return False
    directory = os.path.join(corpus, target)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "seed-" + hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return True


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# hook_request and fhir_reader ------------------------------------------------------------------------------
requests = []
for pattern in ("fixtures/rules/*.json", "fixtures/review/*.json", "fixtures/review/second/*.json", "fixtures/real/*.json"):
    for path in sorted(glob.glob(os.path.join(repo, pattern))):
        with open(path, encoding="utf-8") as f:
            requests.append(json.load(f))

fhir_values = {}
for request in requests:
    text = compact(request)
    if len(text.encode()) > max_len:
        # Keep the first n entries of each prefetch Bundle, as many as fit.
        shrunk = copy.deepcopy(request)
        bundles = [v for v in (shrunk.get("prefetch") or {}).values() if isinstance(v, dict) and isinstance(v.get("entry"), list)]
        originals = [list(b["entry"]) for b in bundles]
        n = max((len(o) for o in originals), default=0)
        while n > 0 and len(text.encode()) > max_len:
            n = n * 3 // 4
            for bundle, entries in zip(bundles, originals):
                bundle["entry"] = entries[:n]
            text = compact(shrunk)
    write("hook_request", text)
    context = request.get("context") or {}
    values = [context.get("draftOrders")] + list((request.get("prefetch") or {}).values())
    for value in values:
        fhir_values[compact(value)] = value
        if isinstance(value, dict):
            for entry in value.get("entry") or []:
                if isinstance(entry, dict) and "resource" in entry:
                    fhir_values[compact(entry["resource"])] = entry["resource"]
for text in fhir_values:
    write("fhir_reader", text)

# jwt ---------------------------------------------------------------------------------------------------------
auth = os.path.join(repo, "fixtures", "auth")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der, size):
    """An ECDSA signature as DER SEQUENCE { r, s } → r || s, each `size` bytes."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        length = der[i + 1]
        integer = der[i + 2 : i + 2 + length].lstrip(b"\x00")
        out += integer.rjust(size, b"\x00")
        i += 2 + length
    return out


def mint(header, claims):
    signing_input = b64url(compact(header).encode()) + "." + b64url(compact(claims).encode())
    key = "es384-private.pem" if header["alg"] == "ES384" else "rs384-private.pem"
    signature = subprocess.run(
        ["openssl", "dgst", "-sha384", "-sign", os.path.join(auth, key), "-binary"],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    ).stdout
    if header["alg"] == "ES384":
        signature = der_to_raw(signature, 48)
    return signing_input + "." + b64url(signature)


es = {"alg": "ES384", "typ": "JWT", "kid": "test-es384"}
rs = {"alg": "RS384", "typ": "JWT", "kid": "test-rs384"}
base = {"iss": ISSUER, "aud": AUD, "iat": "NOW", "exp": "NOW+300", "jti": "seed-jti"}
variants = [
    (es, base),
    (rs, base),
    (es, dict(base, aud=[AUD, "https://other.example"])),
    (es, dict(base, nbf="NOW-10", tenant="hospital-a")),
    ({"alg": "ES384", "typ": "jwt", "kid": "test-es384", "jku": "https://ehr.test.example/jwks"}, base),
    (dict(es, crit=["exp"]), base),
    (es, dict(base, exp="NOW-31")),
    (es, dict(base, exp="NOW+900")),
    (es, dict(base, iat="NOW+60")),
    (es, dict(base, jti="")),
    (es, {k: v for k, v in base.items() if k != "jti"}),
    (es, dict(base, iss="https://sandbox.cds-hooks.org")),
    (dict(es, kid="test-rs384"), base),
    (dict(es, alg="HS384"), base),
    (dict(es, alg="none"), base),
]
def with_now(claims, now=None):
    """The claims' JSON; "NOW+n" strings become the bare NOW+n the target replaces, or numbers for `now`."""
    text = compact(claims)
    for name, value in claims.items():
        if isinstance(value, str) and value.startswith("NOW"):
            number = value if now is None else str(now + int(value[3:] or 0))
            text = text.replace(compact({name: value})[1:-1], compact(name) + ":" + number)
    return text


for header, claims in variants:
    write("jwt", "1" + compact(header) + "\n" + with_now(claims))
    write("jwt", "2" + compact(dict(header, alg="RS384", kid="test-rs384")) + "\n" + with_now(claims))
# Whole tokens, signed with openssl, live for five minutes from now (older ones stay in the corpus, expired).
for header, claims in variants[:4]:
    write("jwt", "0" + mint(header, json.loads(with_now(claims, NOW))))
# a sandbox-shaped token (unknown issuer) and a three-part string of base64url JSON without a signature
write("jwt", "0" + b64url(compact({"alg": "ES384", "typ": "JWT", "kid": "x", "jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"}).encode())
      + "." + b64url(with_now(dict(base, iss="https://sandbox.cds-hooks.org"), NOW).encode()) + ".")

# config ------------------------------------------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(repo, "config", "*.toml"))):
    with open(path, encoding="utf-8") as f:
        write("config", f.read())
with open(os.path.join(auth, "test-jwks.json"), encoding="utf-8") as f:
    jwks = f.read()
client = '[[client]]\nissuer = "https://ehr.test.example"\n'
write("config", 'public_base_url = "http://127.0.0.1:8080"\n\n' + client + 'jwks_file = "test-jwks.json"\nalgorithms = ["ES384", "RS384"]\n')
write("config", 'public_base_url = "https://cds.example.org/"\n[fhir]\ndeadline_ms = 1500\nmax_pages = 3\nmax_entries = 100\n'
      'max_body_bytes = 65536\nservers = ["https://ehr.example.org"]\nopen_servers = ["http://127.0.0.1:9000"]\n\n'
      + client + "jwks = '''" + jwks + "'''\nalgorithms = [\"ES384\"]\ntenant = \"hospital-a\"\n"
      'fhir_servers = ["https://ehr.example.org:8443"]\nopen_fhir_servers = ["https://launch.smarthealthit.org"]\n\n'
      '[[client]]\nissuer = "https://sandbox.cds-hooks.org"\njwks_url = "https://sandbox.cds-hooks.org/.well-known/jwks.json"\n'
      'algorithms = ["ES384", "EdDSA", "PS256"]\n')
write("config", 'public_base_url = "https://cds.example.org"\n' + client + "jwks = '{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"k\":\"c2VjcmV0\"}]}'\nalgorithms = [\"HS256\"]\n")
