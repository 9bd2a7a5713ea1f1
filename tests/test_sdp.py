"""SDP offer/answer for one G.711 audio stream with RFC 4733 telephone-event."""

from __future__ import annotations

import pytest

from channels.sdp import NegotiatedAudio, SdpError, build_answer, negotiate, parse_sdp


def offer(*media: str, session: str = "c=IN IP4 192.0.2.10\r\n") -> bytes:
    head = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n" + session
    return (head + "t=0 0\r\n" + "".join(media)).encode()


def audio(formats: str, *attributes: str, port: int = 49170, proto: str = "RTP/AVP") -> str:
    return f"m=audio {port} {proto} {formats}\r\n" + "".join(f"{a}\r\n" for a in attributes)


def negotiated(body: bytes) -> NegotiatedAudio:
    return negotiate(parse_sdp(body))


def answer_lines(body: bytes) -> list[str]:
    answer = build_answer(negotiated(body), "198.51.100.1", 20000, session_id=42)
    return answer.decode().split("\r\n")


def test_pcmu_chosen_with_its_address_and_port() -> None:
    result = negotiated(offer(audio("0 101", "a=rtpmap:101 telephone-event/8000")))
    assert (result.codec, result.payload_type) == ("PCMU", 0)
    assert (result.remote_address, result.remote_port) == ("192.0.2.10", 49170)
    assert result.telephone_event == 101


def test_pcma_chosen_when_it_is_the_only_g711() -> None:
    result = negotiated(offer(audio("18 8", "a=rtpmap:18 G729/8000")))
    assert (result.codec, result.payload_type) == ("PCMA", 8)
    assert result.telephone_event is None


@pytest.mark.parametrize(
    ("formats", "codec"), [("8 0", "PCMA"), ("0 8", "PCMU"), ("9 8 0", "PCMA")]
)
def test_first_offered_g711_wins(formats: str, codec: str) -> None:
    assert negotiated(offer(audio(formats))).codec == codec


@pytest.mark.parametrize("pt", [96, 101, 127])
def test_telephone_event_payload_type_kept_from_the_offer(pt: int) -> None:
    body = offer(audio(f"0 {pt}", f"a=rtpmap:{pt} telephone-event/8000", f"a=fmtp:{pt} 0-15"))
    assert negotiated(body).telephone_event == pt
    lines = answer_lines(body)
    assert f"m=audio 20000 RTP/AVP 0 {pt}" in lines
    assert f"a=rtpmap:{pt} telephone-event/8000" in lines


def test_telephone_event_at_another_clock_rate_is_not_used() -> None:
    body = offer(audio("0 110", "a=rtpmap:110 telephone-event/48000"))
    assert negotiated(body).telephone_event is None


def test_static_payload_types_need_no_rtpmap() -> None:
    assert negotiated(offer(audio("8"))).codec == "PCMA"


def test_dynamic_payload_type_mapped_to_pcmu_is_kept() -> None:
    body = offer(audio("97", "a=rtpmap:97 pcmu/8000"))
    result = negotiated(body)
    assert (result.codec, result.payload_type) == ("PCMU", 97)
    assert "a=rtpmap:97 PCMU/8000" in answer_lines(body)


def test_session_level_connection_is_used_when_the_stream_has_none() -> None:
    assert negotiated(offer(audio("0"))).remote_address == "192.0.2.10"


def test_media_level_connection_overrides_the_session_level_one() -> None:
    body = offer(audio("0", "c=IN IP4 203.0.113.9"))
    assert negotiated(body).remote_address == "203.0.113.9"


def test_connection_only_at_media_level_is_enough() -> None:
    body = offer(audio("0", "c=IN IP4 203.0.113.9/127"), session="")
    assert negotiated(body).remote_address == "203.0.113.9"


def test_no_connection_address_is_an_error() -> None:
    with pytest.raises(SdpError, match="connection"):
        negotiated(offer(audio("0"), session=""))


def test_stream_with_port_0_is_skipped_and_refused_again_in_the_answer() -> None:
    body = offer(audio("0", port=0), audio("8", port=5004))
    result = negotiated(body)
    assert (result.remote_port, result.codec) == (5004, "PCMA")
    media_lines = [line for line in answer_lines(body) if line.startswith("m=")]
    assert media_lines == ["m=audio 0 RTP/AVP 0", "m=audio 20000 RTP/AVP 8"]


def test_offered_video_is_refused_with_port_0_in_the_answer() -> None:
    body = offer(audio("0"), "m=video 51372 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")
    media_lines = [line for line in answer_lines(body) if line.startswith("m=")]
    assert media_lines == ["m=audio 20000 RTP/AVP 0", "m=video 0 RTP/AVP 96"]


def test_no_common_codec_is_an_error() -> None:
    body = offer(audio("9 18 96", "a=rtpmap:96 opus/48000/2"))
    with pytest.raises(SdpError, match="codec"):
        negotiated(body)


def test_srtp_only_offer_is_an_error() -> None:
    with pytest.raises(SdpError):
        negotiated(offer(audio("0", proto="RTP/SAVP")))


def test_offer_without_audio_is_an_error() -> None:
    with pytest.raises(SdpError, match="no audio"):
        negotiated(offer("m=video 51372 RTP/AVP 31\r\n"))


@pytest.mark.parametrize(
    "body",
    [
        offer("m=audio 49170 RTP/AVP\r\n"),
        offer("m=audio port RTP/AVP 0\r\n"),
        offer("m=audio 70000 RTP/AVP 0\r\n"),
        offer(audio("0"), session="c=IN IP4\r\n"),
        b"v=0\r\ns=\xff\xfe\r\n",
    ],
    ids=["no-formats", "port-text", "port-too-big", "short-c", "not-utf8"],
)
def test_malformed_sdp_is_an_sdp_error(body: bytes) -> None:
    with pytest.raises(SdpError):
        negotiated(body)


def test_answer_text() -> None:
    body = offer(audio("0 8 101", "a=rtpmap:101 telephone-event/8000", "a=ptime:30"))
    answer = build_answer(negotiated(body), "198.51.100.1", 20000, session_id=42, version=3)
    assert answer == (
        b"v=0\r\n"
        b"o=- 42 3 IN IP4 198.51.100.1\r\n"
        b"s=ARA Voicemail\r\n"
        b"c=IN IP4 198.51.100.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )
    assert negotiated(body).ptime == 30


@pytest.mark.parametrize(
    ("session", "media", "answered"),
    [
        ("", "", "sendrecv"),
        ("a=sendonly\r\n", "", "recvonly"),
        ("", "a=recvonly", "sendonly"),
        ("a=inactive\r\n", "", "inactive"),
        ("a=sendonly\r\n", "a=sendrecv", "sendrecv"),
    ],
    ids=["default", "session-sendonly", "media-recvonly", "inactive", "media-overrides"],
)
def test_answer_direction_mirrors_the_offer(session: str, media: str, answered: str) -> None:
    attributes = (media,) if media else ()
    body = offer(audio("0", *attributes), session="c=IN IP4 192.0.2.10\r\n" + session)
    assert answer_lines(body)[-2] == f"a={answered}"


def test_bare_lf_sdp_is_understood() -> None:
    body = offer(audio("8")).replace(b"\r\n", b"\n")
    assert negotiated(body).codec == "PCMA"
