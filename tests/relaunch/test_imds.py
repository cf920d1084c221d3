"""The IMDSv2 client against the local metadata service: tokens, notices, faults."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from job.imds import IMDS, IMDSError, parse_time
from job.testing.imds_server import ImdsServer


def test_token_is_required_and_sent(imds):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(imds.url + "/latest/meta-data/instance-id", timeout=5)
    assert err.value.code == 401
    client = IMDS(imds.url)
    assert client.instance_identity() == {"instance_id": "i-0aaaaaaaaaaaaaaa1", "instance_type": "g5.xlarge",
                                          "az": "us-east-1b", "region": "us-east-1"}
    client.instance_identity()
    assert imds.stats()["counts"]["token_requests"] == 1  # cached between calls


def test_notice_and_rebalance_appear_after_their_delay(imds):
    client = IMDS(imds.url)
    assert client.spot_instance_action() is None
    assert client.rebalance_recommendation() is None
    imds.schedule_notice(in_s=0.6, action="terminate")
    imds.schedule_rebalance(in_s=0)
    assert client.spot_instance_action() is None
    assert set(client.rebalance_recommendation()) == {"noticeTime"}
    time.sleep(0.7)
    notice = client.spot_instance_action()
    assert notice["action"] == "terminate"
    # amazon-ec2-metadata-mock's default: the action two minutes after the notice
    assert 115 < parse_time(notice["time"]) - time.time() < 121


def test_expired_token_is_refreshed_once(imds):
    client = IMDS(imds.url)
    assert client.spot_instance_action() is None
    imds.expire_tokens()
    assert client.spot_instance_action() is None  # 401, new token, retried
    counts = imds.stats()["counts"]
    assert counts["unauthorized"] == 1 and counts["token_requests"] == 2


def test_token_is_refreshed_before_it_expires():
    with ImdsServer() as server:
        client = IMDS(server.url, token_ttl_s=2)   # refresh margin 0.2 s
        client.spot_instance_action()
        time.sleep(1.9)
        client.spot_instance_action()
        counts = server.stats()["counts"]
    assert counts["token_requests"] == 2 and counts.get("unauthorized", 0) == 0


def test_errors_and_timeouts_raise_imds_error_quickly(imds):
    client = IMDS(imds.url, timeout=0.5)
    imds.inject_faults(errors_5xx=1, timeouts=1, timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(IMDSError):
        client.spot_instance_action()   # the token PUT times out
    assert time.monotonic() - started < 1.4
    with pytest.raises(IMDSError, match="HTTP 500"):
        client.spot_instance_action()
    assert client.spot_instance_action() is None  # recovered


def test_unreachable_endpoint_is_an_imds_error():
    from job.testing.moto_server import free_port

    with pytest.raises(IMDSError, match="unreachable"):
        IMDS(f"http://127.0.0.1:{free_port()}", timeout=0.5).spot_instance_action()


def test_parse_time_accepts_fractional_seconds():
    assert parse_time("2020-01-07T01:03:47Z") == 1578359027.0
    assert parse_time("2020-01-07T01:03:47.5Z") == 1578359027.5


def test_cut_short_and_non_object_replies_are_imds_errors(imds):
    client = IMDS(imds.url, timeout=0.5)
    assert client.spot_instance_action() is None     # token fetched; the faults hit only metadata GETs
    imds.inject_faults(truncated=1, garbage=1)
    with pytest.raises(IMDSError, match="broken reply"):
        client.spot_instance_action()
    with pytest.raises(IMDSError, match="expected a JSON object"):
        client.rebalance_recommendation()
    assert client.spot_instance_action() is None  # recovered
    counts = imds.stats()["counts"]
    assert counts["truncated"] == 1 and counts["garbage"] == 1
