"""The webhook's certificates: created when missing, renewed before they expire, the CA
rotated so that what is served is always trusted by the caBundle."""

from __future__ import annotations

import datetime
import ssl

from cryptography import x509

from controller.webhook.certs import (
    Bundle,
    Policy,
    make_ca,
    make_serving,
    renewed,
    service_hosts,
)

NOW = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
HOSTS = tuple(service_hosts("phalanx-webhook", "phalanx-system", ["127.0.0.1"]))
POLICY = Policy(HOSTS)


def later(days: float) -> datetime.datetime:
    return NOW + datetime.timedelta(days=days)


def fresh() -> Bundle:
    change = renewed(None, NOW, POLICY)
    assert change is not None
    return change[0]


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def test_no_secret_gives_a_ca_and_a_serving_certificate_for_every_service_name() -> None:
    bundle, why = renewed(None, NOW, POLICY) or (None, [])
    assert bundle is not None and why == ["no certificate Secret", "no serving certificate"]
    cert = bundle.serving()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "phalanx-webhook",
        "phalanx-webhook.phalanx-system",
        "phalanx-webhook.phalanx-system.svc",
        "phalanx-webhook.phalanx-system.svc.cluster.local",
    }
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_after_utc - NOW == datetime.timedelta(days=365)


def test_the_serving_certificate_verifies_against_the_ca_bundle() -> None:
    bundle = fresh()
    (ca,) = bundle.cas()
    bundle.serving().verify_directly_issued_by(ca)  # raises if the signature is not ca's
    assert len(ssl.create_default_context(cadata=bundle.ca_crt.decode()).get_ca_certs()) == 1


def test_a_valid_bundle_is_left_alone() -> None:
    assert renewed(fresh(), later(300), POLICY) is None


def test_the_serving_certificate_is_renewed_before_it_expires_and_the_ca_stays() -> None:
    bundle = fresh()
    again, why = renewed(bundle, later(340), POLICY) or (bundle, [])
    assert why == ["tls.crt expires in 25 days"]
    assert serial(again.tls_crt) != serial(bundle.tls_crt)
    assert (again.ca_crt, again.ca_key) == (bundle.ca_crt, bundle.ca_key)


def test_a_serving_certificate_missing_a_service_name_is_issued_again() -> None:
    bundle = fresh()
    again, why = renewed(bundle, NOW, Policy((*HOSTS, "phalanx-webhook.other"))) or (bundle, [])
    assert why == ["tls.crt does not name phalanx-webhook.other"]
    assert serial(again.tls_crt) != serial(bundle.tls_crt)


def test_a_serving_certificate_signed_by_a_stranger_is_replaced() -> None:
    bundle = fresh()
    other_ca, other_key = make_ca(NOW, 10)
    crt, key = make_serving(other_ca, other_key, HOSTS, NOW, 100)
    forged = Bundle(crt, key, bundle.ca_crt, bundle.ca_key)
    again, why = renewed(forged, NOW, POLICY) or (forged, [])
    assert why == ["no unexpired CA of ca.crt signed tls.crt"]
    assert again.serving().issuer == bundle.cas()[0].subject


def test_a_ca_near_its_end_is_replaced_and_the_old_one_stays_trusted() -> None:
    bundle = fresh()
    when = later(3650 - 700)
    again, why = renewed(bundle, when, POLICY) or (bundle, [])
    assert why[0] == "the CA expires in 700 days"
    cas = again.cas()
    assert len(cas) == 2 and cas[1].serial_number == bundle.cas()[0].serial_number


def test_a_still_valid_serving_certificate_survives_a_ca_rotation() -> None:
    bundle = fresh()
    renewed_cert = renewed(bundle, later(3650 - 760), POLICY)
    assert renewed_cert is not None
    mid = renewed_cert[0]  # serving certificate renewed near the CA's end
    rotated, why = renewed(mid, later(3650 - 729), POLICY) or (mid, [])
    assert why == ["the CA expires in 729 days"]
    assert serial(rotated.tls_crt) == serial(mid.tls_crt)
    assert len(rotated.cas()) == 2


def test_an_expired_ca_is_dropped_from_the_bundle() -> None:
    bundle = fresh()
    rotated, _ = renewed(bundle, later(3650 - 700), POLICY) or (bundle, [])
    after, why = renewed(rotated, later(3651), POLICY) or (rotated, [])
    assert "ca.crt holds an expired CA" in why
    assert len(after.cas()) == 1


def test_a_secret_without_ca_key_gets_a_new_ca() -> None:
    bundle = fresh()
    broken = Bundle(bundle.tls_crt, bundle.tls_key, bundle.ca_crt, b"")
    again, why = renewed(broken, NOW, POLICY) or (broken, [])
    assert why[0] == "ca.key is missing or does not match the first certificate of ca.crt"
    assert again.ca_key


def test_the_bundle_round_trips_through_secret_data() -> None:
    bundle = fresh()
    assert Bundle.from_secret({"data": bundle.data()}) == bundle
    assert Bundle.from_secret({"data": {"tls.crt": "x"}}) is None
