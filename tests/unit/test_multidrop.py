"""Multidrop routing tables: header sets in, recipient lists out (fetchmail 6.4's rules)."""

from __future__ import annotations

import pytest

from fetchd.delivery.multidrop import MultidropRules, header_digest, received_for, route

RULES = MultidropRules(
    server_names=("pop.example.org",),  # the true name
    aka=("mail.example.org",),
    localnames=("joe", ("ann", "anna"), ("boss@example.com", "chief")),
    postmaster="pm",
)


def message(*header_lines: str) -> bytes:
    return ("\r\n".join(header_lines) + "\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize(
    ("lines", "rules", "expected"),
    [
        # Guessing from To/Cc/Bcc (the default envelope, Received, names no one here).
        (["To: joe@pop.example.org, stranger@elsewhere.net"], RULES, ("joe",)),
        (
            ["To: Ann <ann@mail.example.org>", "Cc: joe@sub.mail.example.org"],
            RULES,
            ("anna", "joe"),
        ),
        (["To: boss@example.com"], RULES, ("chief",)),  # a whole address named in the map
        (["To: JOE@POP.EXAMPLE.ORG", "Bcc: joe@pop.example.org"], RULES, ("joe",)),  # once
        (["To: nobody@pop.example.org"], RULES, ("pm",)),  # our host, not our user
        (["To: joe"], RULES, ("pm",)),  # no domain: ignored, as fetchmail
        # Resent-* headers, when there are any, are the only ones read.
        (["To: joe@pop.example.org", "Resent-To: ann@pop.example.org"], RULES, ("anna",)),
        # is * here: any local part at our host.
        (
            ["To: whoever@pop.example.org"],
            MultidropRules(("pop.example.org",), wildcard=True),
            ("whoever",),
        ),
        # localdomains: the whole address goes on.
        (
            ["To: sales@shop.example.net"],
            MultidropRules(("pop.example.org",), localdomains=("example.net",)),
            ("sales@shop.example.net",),
        ),
        # qvirtual: the prefix is removed first.
        (
            ["To: example-joe@pop.example.org"],
            MultidropRules(("pop.example.org",), localnames=("joe",), qvirtual="example-"),
            ("joe",),
        ),
    ],
)
def test_guessing_from_the_headers(
    lines: list[str], rules: MultidropRules, expected: tuple[str, ...]
) -> None:
    assert route(message(*lines), rules).recipients == expected


def test_the_received_envelope_needs_our_server_as_the_by_host() -> None:
    ours = message(
        "Received: from mx.sender.net by mail.example.org (Postfix) with ESMTP id 1\r\n"
        "\tfor <ann@pop.example.org>; Tue, 1 Dec 2026 10:00:00 +0000",
        "To: joe@pop.example.org",
    )
    routing = route(ours, RULES)
    assert routing.recipients == ("anna",) and routing.from_envelope
    theirs = ours.replace(b"by mail.example.org", b"by relay.elsewhere.net")
    assert route(theirs, RULES).recipients == ("joe",)  # not our server: guessed from To


def test_envelope_header_with_a_skip_count_and_no_fallback() -> None:
    rules = MultidropRules(
        ("pop.example.org",), localnames=("joe", "ann"), envelope="Delivered-To", envskip=1
    )
    lines = [
        "Delivered-To: catchall@pop.example.org",  # added by the server itself: skipped
        "Delivered-To: ann@pop.example.org",
        "To: joe@pop.example.org",
    ]
    assert route(message(*lines), rules).recipients == ("ann",)
    # The envelope header is there but names nobody here: the postmaster, no guessing.
    lines[1] = "Delivered-To: stranger@elsewhere.net"
    routing = route(message(*lines), rules)
    assert routing.to_postmaster and routing.recipients == ("postmaster",)
    assert routing.warning == "recipient address stranger@elsewhere.net didn't match any local name"
    # Absent: guessing.
    assert route(message("To: joe@pop.example.org"), rules).recipients == ("joe",)


def test_a_prefix_of_the_header_name_matches_as_in_fetchmail() -> None:
    rules = MultidropRules(("pop.example.org",), localnames=("joe",), envelope="X-Original")
    assert route(message("X-Original-To: joe@pop.example.org"), rules).recipients == ("joe",)


def test_no_envelope_guesses_and_nobody_goes_to_the_postmaster_with_a_warning() -> None:
    rules = MultidropRules(("pop.example.org",), localnames=("joe",), envelope=None)
    routing = route(message("To: a@elsewhere.net, b@elsewhere.net"), rules)
    assert routing.recipients == ("postmaster",) and routing.to_postmaster
    assert routing.warning == "no recipient addresses matched declared local names"
    nobody = MultidropRules(("pop.example.org",), envelope=None, postmaster="")
    assert route(message("To: a@elsewhere.net"), nobody).recipients == ()


def test_the_duplicate_digest_covers_the_whole_header_only() -> None:
    first = message("Subject: a", "Message-ID: <1@x>")
    assert header_digest(first) == header_digest(first.replace(b"body", b"other body"))
    assert header_digest(first) != header_digest(first.replace(b"<1@x>", b"<2@x>"))


@pytest.mark.parametrize(
    "to",
    ['"a b"@pop.example.org', "-oQ/tmp/x@pop.example.org", '"x<y>"@pop.example.org'],
)
def test_a_hostile_local_part_is_not_ours(to: str) -> None:
    rules = MultidropRules(("pop.example.org",), wildcard=True, postmaster="pm")
    routing = route(message(f"To: {to}, joe@pop.example.org"), rules)
    assert routing.recipients == ("joe",)


def test_the_received_lines_are_walked_until_one_gives_an_address() -> None:
    """A local pickup line of our server (no ``for``) and another host's line are passed over."""
    lines = [
        "Received: by mail.example.org (Postfix, from userid 1000) id 4AB12",
        "Received: from a by relay.elsewhere.net for <x@elsewhere.net>; Mon, 6 Jan",
        "Received: from b by pop.example.org with ESMTP\r\n\tfor <ann@pop.example.org>; Mon",
        "Received: from c by pop.example.org with ESMTP for <joe@pop.example.org>; Mon",
        "To: joe@pop.example.org",
    ]
    routing = route(message(*lines), RULES)
    assert routing.recipients == ("anna",) and routing.from_envelope
    skipped = MultidropRules(RULES.server_names, RULES.localnames, aka=RULES.aka, envskip=3)
    assert route(message(*lines), skipped).recipients == ("joe",)
    # None of them: guessed from To.
    assert route(message(*lines[:2], "To: joe@pop.example.org"), RULES).recipients == ("joe",)


def test_the_true_name_counts_whole_and_an_aka_also_below_it() -> None:
    rules = MultidropRules(("pop.example.org",), ("joe",), aka=("example.net",), postmaster="pm")
    assert route(message("To: joe@sub.pop.example.org"), rules).recipients == ("pm",)
    assert route(message("To: joe@mx1.example.net"), rules).recipients == ("joe",)
    assert route(message("To: joe@EXAMPLE.NET"), rules).recipients == ("joe",)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "from x by pop.example.org with ESMTP for <joe@pop.example.org>; Mon",
            "joe@pop.example.org",
        ),
        ("from x by pop.example.org for joe@pop.example.org; Mon", "joe@pop.example.org"),
        ("from x by pop.example.org for joe@pop.example.org (x)", "joe@pop.example.org"),
        ("from x by pop.example.org for <@relay,@hop:joe@pop.example.org>", "joe@pop.example.org"),
        ("by pop.example.org\r\n\tfor\r\n\t<joe@x.org>; Mon", "joe@x.org"),  # folded
        ("from x by a@b.org by pop.example.org for <joe@x.org>", "joe@x.org"),  # an address
        ("from x by pop.example.org for joe for <ann@x.org>", "ann@x.org"),  # no @: skipped
        ("from x By pop.example.org for <joe@x.org>", None),  # "by" in lower case only
        ("from x by pop.example.org; for <joe@x.org>", None),  # "pop.example.org;" is the host
        ("from x by other.example.org for <joe@x.org>", None),
        ("from x by pop.example.org with ESMTP id 1", None),
        ("from x by pop.example.org for <joe @x.org>", None),  # white space inside <>
        ("from x by pop.example.org for <>@x", None),
        ("from x by pop.example.orgfor <joe@x.org>", None),
        ("from nearby.example by pop.example.org for <joe@x.org>", "joe@x.org"),
    ],
)
def test_received_for_reads_a_line_as_fetchmail(line: str, expected: str | None) -> None:
    assert received_for(line, RULES) == expected


def test_the_warning_names_the_one_address_at_a_foreign_host() -> None:
    """fetchmail counts as refused only addresses at other hosts: an unknown user at ours, or
    an address without a host, is not named."""
    for to, warning in [
        ("nobody@pop.example.org", "no recipient addresses matched declared local names"),
        ("a@elsewhere.net, nobody@pop.example.org", "recipient address a@elsewhere.net didn't"),
        ("a@elsewhere.net, joe", "recipient address a@elsewhere.net didn't"),
        ("a@elsewhere.net, b@elsewhere.net", "no recipient addresses matched declared local"),
        ("joe, ann", "no recipient addresses matched declared local names"),
    ]:
        routing = route(message(f"To: {to}"), RULES)
        assert routing.to_postmaster and routing.warning is not None
        assert routing.warning.startswith(warning), (to, routing.warning)
    qvirtual = MultidropRules(RULES.server_names, RULES.localnames, qvirtual="v-")
    routing = route(message("To: v-a@elsewhere.net"), qvirtual)
    assert routing.warning == "recipient address a@elsewhere.net didn't match any local name"
