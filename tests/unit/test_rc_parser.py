"""Table-driven tests of the rc lexer and parser: every keyword, every error, fetchmail's corners.

The differential test (tests/integration/test_rc_differential.py) compares whole files with the
real fetchmail; these pin each rule on its own, so a regression names the rule it broke.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fetchd.config import ParseEnvironment, configdump, parse
from fetchd.config.check import connect_port
from fetchd.config.lexer import Kind, tokenize, unescape
from fetchd.config.parser import GLOBAL_OPTIONS, SERVER_OPTIONS, USER_OPTIONS
from fetchd.errors import RCSyntaxError

ENV = ParseEnvironment(login="me", home="/home/me", rcdir="/home/me", hostname="box")


def one_user(text: str):  # type: ignore[no-untyped-def]
    config = parse(text, "rc", ENV)
    [server] = config.servers
    [user] = server.users
    return server, user


# --- lexer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("poll h", [(Kind.KEYWORD, "poll"), (Kind.STRING, "h")]),
        ("server h", [(Kind.KEYWORD, "poll"), (Kind.STRING, "h")]),
        ("with and has wants options : ; , h", [(Kind.STRING, "h")]),
        ("limit 5000", [(Kind.KEYWORD, "limit"), (Kind.NUMBER, "5000")]),
        ("limit 10x", [(Kind.KEYWORD, "limit"), (Kind.STRING, "10x")]),
        ("via 10.0.0.1", [(Kind.KEYWORD, "via"), (Kind.STRING, "10.0.0.1")]),
        ("nokeep", [(Kind.KEYWORD, "no"), (Kind.KEYWORD, "keep")]),
        ("nossl", [(Kind.STRING, "nossl")]),
        ("user keep", [(Kind.KEYWORD, "user"), (Kind.STRING, "keep")]),
        ("pass 1234", [(Kind.KEYWORD, "password"), (Kind.STRING, "1234")]),
        ("auth password", [(Kind.KEYWORD, "authenticate"), (Kind.AUTHTYPE, "password")]),
        # noise words do not end the AUTH state
        ("auth wants password", [(Kind.KEYWORD, "authenticate"), (Kind.AUTHTYPE, "password")]),
        ("auth cram", [(Kind.KEYWORD, "authenticate"), (Kind.AUTHTYPE, "cram-md5")]),
        ("auth opie", [(Kind.KEYWORD, "authenticate"), (Kind.AUTHTYPE, "otp")]),
        ("folder imap", [(Kind.KEYWORD, "folder"), (Kind.PROTOCOL, "imap")]),
        ("folder Imap", [(Kind.KEYWORD, "folder"), (Kind.STRING, "Imap")]),
        ("via any", [(Kind.KEYWORD, "via"), (Kind.AUTHTYPE, "any")]),
        ("user any", [(Kind.KEYWORD, "user"), (Kind.STRING, "any")]),
        ("smtphosts", [(Kind.STRING, "smtphosts")]),  # not a spelling of smtphost
        # a quoted string ends the NAME state: here `keep` is the keyword again
        ('is "a" keep', [(Kind.KEYWORD, "is"), (Kind.STRING, "a"), (Kind.KEYWORD, "keep")]),
        ("is a=b", [(Kind.KEYWORD, "is"), (Kind.STRING, "a"), (Kind.MAP, "="), (Kind.STRING, "b")]),
        ("is *", [(Kind.KEYWORD, "is"), (Kind.STRING, "*")]),
        ("\"a b\" 'c d'", [(Kind.STRING, "a b"), (Kind.STRING, "c d")]),
        ('"q\\"x"', [(Kind.STRING, '"q"x"')]),  # flex's longest match: one bare word
        ("# comment\nkeep # more", [(Kind.KEYWORD, "keep")]),
        ("POLL", [(Kind.STRING, "POLL")]),  # keywords are case-sensitive
        ("username u", [(Kind.KEYWORD, "user"), (Kind.STRING, "u")]),
        ("smtp h", [(Kind.KEYWORD, "smtphost"), (Kind.STRING, "h")]),
        ("folders f", [(Kind.KEYWORD, "folder"), (Kind.STRING, "f")]),
        ("local d", [(Kind.KEYWORD, "localdomains"), (Kind.STRING, "d")]),
        ("proto imap", [(Kind.KEYWORD, "protocol"), (Kind.PROTOCOL, "imap")]),
        ("proto POP3", [(Kind.KEYWORD, "protocol"), (Kind.PROTOCOL, "pop3")]),
    ],
)
def test_tokens(text: str, expected: list[tuple[Kind, str]]) -> None:
    tokens = tokenize(text + "\n", "rc")
    assert [(t.kind, t.value) for t in tokens[:-1]] == expected
    assert tokens[-1].kind is Kind.END


def test_positions_count_lines_inside_strings() -> None:
    tokens = tokenize('mda "a\nb" keep\n  fetchall', "rc")
    assert [(t.value, t.line, t.column) for t in tokens[:-1]] == [
        ("mda", 1, 1),
        ("a\nb", 1, 5),
        ("keep", 2, 4),
        ("fetchall", 3, 3),
    ]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (r"a\tb", "a\tb"),
        (r"\n\r\b", "\n\r\b"),
        (r"\x41\x4a", "AJ"),
        (r"\101", "e"),  # decimal, not octal
        (r"\0101", "\b1"),  # octal: a zero and two digits
        ("a\\\nb", "ab"),  # backslash-newline joins lines
        (r"\\", "\\"),
        (r"\q", "q"),
    ],
)
def test_fetchmail_escapes(raw: str, value: str) -> None:
    assert unescape(raw, "rc", 1, 1) == value


def test_an_unclosed_quote_starts_a_bare_word_as_in_flex() -> None:
    tokens = tokenize('poll "h x\n', "rc")
    assert [(t.kind, t.value) for t in tokens[:-1]] == [
        (Kind.KEYWORD, "poll"),
        (Kind.STRING, '"h'),
        (Kind.STRING, "x"),
    ]


def test_an_unclosed_quote_is_marked_where_it_opens() -> None:
    tokens = tokenize('poll h user "ab\n x c\n', "rc")
    assert [(t.text, t.unclosed) for t in tokens[2:5]] == [
        ("user", False),
        ('"ab', True),
        ("x", False),
    ]
    # A quote closed later in the file makes one string, newline and all: not unclosed.
    assert not any(t.unclosed for t in tokenize('poll "h\n" user u\n', "rc"))


def test_a_syntax_error_after_an_unclosed_quote_names_where_the_quote_opens() -> None:
    with pytest.raises(RCSyntaxError) as caught:
        parse('poll h proto pop3\n  user u pass "x y\n  keep\n', "rc", ENV)
    error = caught.value
    assert (error.line, error.column, error.found_line) == (2, 15, 2)
    assert "never closed" in error.message and "syntax error at y" in error.message
    assert "line 2, column 18" in error.message
    with pytest.raises(RCSyntaxError) as caught:
        parse('poll h proto pop3\n user "u\n  y\n', "rc", ENV)
    assert (caught.value.line, caught.value.column, caught.value.found_line) == (2, 7, 4)
    # An unclosed quote in an earlier statement is not blamed for a later error.
    with pytest.raises(RCSyntaxError) as caught:
        parse('poll h user "u\npoll b frob\n', "rc", ENV)
    assert (caught.value.line, "never closed" in caught.value.message) == (2, False)


def test_crlf_inside_a_quoted_string_is_kept_as_fetchmail_keeps_it() -> None:
    server, user = one_user('poll h proto pop3\r\n user u pass "a\r\nb"\r\n  mda "m\r\n"\r\n')
    assert (user.password, user.mda, server.protocol) == ("a\r\nb", "m\r\n", "POP3")


def test_crlf_survives_reading_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fetchd.config import load_rcfile

    path = tmp_path / "rc"
    path.write_bytes(b'poll h proto pop3\r\n user u pass "a\r\nb"\r\n')
    config = load_rcfile(str(path), env=ENV, check=False)
    assert config.servers[0].users[0].password == "a\r\nb"


@pytest.mark.parametrize(
    "text",
    ['poll h port "995" user u\n', "poll h port pop3s user u\n", 'poll h timeout "5" user u\n'],
)
def test_a_quoted_number_where_a_number_belongs_is_a_syntax_error(text: str) -> None:
    with pytest.raises(RCSyntaxError) as caught:
        parse(text, "rc", ENV)
    assert caught.value.line == 1


def test_service_takes_a_quoted_number_or_a_name() -> None:
    assert one_user('poll h service "995" user u\n')[0].service == "995"
    assert one_user("poll h service pop3s user u\n")[0].service == "pop3s"


def test_defaults_user_is_the_remote_name_of_entries_naming_none() -> None:
    config = parse(
        'defaults proto pop3 user bob\npoll a pass x\npoll b user carl\npoll c user ""\n'
        "poll d is fred here\n",
        "rc",
        ENV,
    )
    assert [s.users[0].remote for s in config.servers] == ["bob", "carl", "", "bob"]
    assert config.servers[3].users[0].localnames == ("fred",)


def test_an_explicit_empty_user_stays_empty() -> None:
    assert one_user('poll h user "" pass x\n')[1].remote == ""
    assert one_user("poll h user '' there pass x\n")[1].remote == ""
    assert one_user("poll h pass x\n")[1].remote == "me"  # none given: the login name


@pytest.mark.parametrize(
    ("written", "timeout"),
    [("timeout 7", 7), ("timeout 0", 300), ("timeout -1", 300), ("timeout -5", 0), ("", 300)],
)
def test_timeout_is_stored_as_fetchmail_stores_it(written: str, timeout: int) -> None:
    server, _ = one_user(f"poll h {written} user u\n")
    assert server.timeout == timeout
    assert server.deadline == (timeout or 300)  # fetchd still bounds every wait


def test_other_negative_numbers_are_stored_as_fetchmail_stores_them() -> None:
    config = parse(
        "set daemon -5\ndefaults timeout 5 interval -3 envelope -2 X-To\n"
        "poll a timeout -1 user u\npoll b timeout -9 user v\npoll c timeout 0 user w\n",
        "rc",
        ENV,
    )
    assert config.globals.poll_interval == 0
    assert [(s.timeout, s.interval, s.envskip) for s in config.servers] == [
        (300, 0, 0),
        (0, 0, 0),
        (5, 0, 0),
    ]


# --- every keyword -------------------------------------------------------------------------

_USER_VALUES = {
    "string": ('"v"', "v"),
    "path": ('"/p"', "/p"),
    "count": ("7", 7),
    "list": ("a b", ("a", "b")),
    "numbers": ("571 550", (571, 550)),
    "flag": ("", True),
}


@pytest.mark.parametrize("keyword", sorted(USER_OPTIONS))
def test_every_user_keyword(keyword: str) -> None:
    name, kind = USER_OPTIONS[keyword]
    written, value = _USER_VALUES[kind]
    _, user = one_user(f"poll h user u is l here {keyword} {written}\n")
    assert getattr(user, name) == value


@pytest.mark.parametrize(
    "keyword", sorted(k for k, (_, kind) in USER_OPTIONS.items() if kind == "flag" and k != "lmtp")
)
def test_every_user_flag_can_be_negated(keyword: str) -> None:
    name, _ = USER_OPTIONS[keyword]
    _, user = one_user(f"poll h user u is l here {keyword} no {keyword}\n")
    assert getattr(user, name) is False


_SERVER_VALUES = {
    "string": ('"v"', "v"),
    "number": ("9", 9),
    "flag": ("", True),
    "list": ("a b", ("a", "b")),
    "proto": ("imap", "IMAP"),
    "service": ("995", "995"),
    "port": ("995", "995"),
    "auth": ("cram-md5", "cram-md5"),
    "envelope": ('2 "X-To"', "X-To"),
    "badheader": ("accept", True),
}


@pytest.mark.parametrize("keyword", sorted(k for k in SERVER_OPTIONS if k != "retrieve-error"))
def test_every_server_keyword(keyword: str) -> None:
    name, kind = SERVER_OPTIONS[keyword]
    written, value = _SERVER_VALUES[kind]
    server, _ = one_user(f"poll h {keyword} {written} user u\n")
    assert getattr(server, name) == value


@pytest.mark.parametrize("keyword", sorted(GLOBAL_OPTIONS))
def test_every_global_keyword(keyword: str) -> None:
    name, kind = GLOBAL_OPTIONS[keyword]
    written, value = {
        "path": ('"/x"', "/x"),
        "number": ("60", 60),
        "string": ('"v"', "v"),
        "flag": ("", True),
    }[kind]
    config = parse(f"set {keyword} {written}\n", "rc", ENV)
    assert getattr(config.globals, name) == value
    if kind == "flag":
        assert getattr(parse(f"set no {keyword}\n", "rc", ENV).globals, name) is False


# --- structure ---------------------------------------------------------------------------------


def test_user_forms() -> None:
    assert one_user("poll h user joe\n")[1].remote == "joe"
    assert one_user("poll h user joe there\n")[1].localnames == ("me",)
    _, here = one_user("poll h user jo here\n")
    assert (here.remote, here.localnames) == ("me", ("jo",))
    _, mapped = one_user("poll h user r pass p is a b=c * here\n")
    assert mapped.localnames == ("a", ("b", "c")) and mapped.wildcard and mapped.multidrop
    _, remote = one_user("poll h user l1 l2 here is r there\n")
    assert (remote.remote, remote.localnames) == ("r", ("l1", "l2"))


def test_several_users_and_servers() -> None:
    config = parse("poll a user x\nuser y\npoll b user z\nskip c\n", "rc", ENV)
    assert [(s.pollname, s.active, [u.remote for u in s.users]) for s in config.servers] == [
        ("a", True, ["x", "y"]),
        ("b", True, ["z"]),
        ("c", False, ["me"]),
    ]


def test_defaults_fill_only_what_an_entry_leaves_unset() -> None:
    config = parse(
        "defaults proto pop3 timeout 60 aka x keep limit 5 smtphost mx\n"
        "poll a timeout 0 user u no keep\npoll b proto imap user v limit 0\n",
        "rc",
        ENV,
    )
    a, b = config.servers
    assert (a.protocol, a.timeout, a.users[0].keep, a.users[0].limit, a.aka) == (
        "POP3",
        60,
        False,
        5,
        (),
    )
    assert (b.protocol, b.users[0].keep, b.users[0].limit, b.users[0].smtphunt) == (
        "IMAP",
        True,
        0,
        ("mx",),
    )


def test_fetchmail_defaults() -> None:
    server, user = one_user("poll h user u\n")
    assert (server.protocol, server.timeout, server.envelope, server.auth) == (
        "auto",
        300,
        "Received",
        "any",
    )
    assert (user.keep, user.rewrite, user.sslcertck, user.smtphunt, user.warnings) == (
        False,
        True,
        True,
        ("localhost",),
        3600,
    )
    assert one_user("poll h user u mda x\n")[1].stripcr is True


def test_relative_paths_are_relative_to_the_rc_file() -> None:
    config = parse("set idfile ids\npoll h user u sslcertfile ca.pem\n", "rc", ENV)
    assert config.globals.idfile == "/home/me/ids"
    assert config.servers[0].users[0].sslcertfile == "/home/me/ca.pem"


def test_keyword_uses_are_recorded_with_lines() -> None:
    config = parse("poll h\n  user u\n  is l here\n  mda x\n", "rc", ENV)
    uses = {(u.keyword, u.line, u.remote) for u in config.keyword_uses}
    assert ("mda", 4, "u") in uses and ("user", 2, None) in uses


def test_the_password_is_not_in_repr() -> None:
    _, user = one_user('poll h user u password "hunter2"\n')
    assert "hunter2" not in repr(user)


# --- every error -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("keep\n", 1, 1, "syntax error at keep: expected 'set', 'poll', 'skip' or 'defaults'"),
        ("poll\n", 2, 1, "syntax error at end of file: expected a server name"),
        ("poll keep\n", 1, 6, "expected a server name"),
        ("set frob 1\n", 1, 5, "expected a global option"),
        ("set no daemon 5\n", 1, 8, "expected a global option"),
        ("set daemon x\n", 1, 12, "expected a number"),
        ("poll h proto pop9\n", 1, 14, "expected a protocol"),
        ("poll h proto Pop3\n", 1, 14, "expected a protocol"),
        ("poll h auth sasl\n", 1, 13, "expected an authentication type"),
        ("poll h bad-header maybe\n", 1, 19, "expected accept or reject"),
        ("poll h user u limit big\n", 1, 21, "expected a number"),
        ("poll h user u is\n", 2, 1, "expected a local name or '*'"),
        ("poll h user u no frob\n", 1, 18, "expected a keyword that 'no' can negate"),
        ("poll h user u frob\n", 2, 1, "expected 'here' after a list of local names"),
        (
            "poll h user u is l here frob\n",
            1,
            25,
            "expected a user option, 'user', 'poll', 'skip' or 'set'",
        ),
        ("poll h user u aka x\n", 2, 1, "server option 'aka' at line 1, column 15"),
        ("poll h user a b\n", 2, 1, "expected 'here' after a list of local names"),
        ("poll h user u is a = \n", 2, 1, "expected a local name after '='"),
        ("poll h user u antispam x\n", 1, 24, "expected an SMTP reply code"),
        ('poll h user u mda "\\999"\n', 1, 19, "out of range"),
    ],
)
def test_every_error_names_file_line_column_found_and_expected(
    text: str, line: int, column: int, fragment: str
) -> None:
    with pytest.raises(RCSyntaxError) as caught:
        parse(text, "/home/me/.fetchmailrc", ENV)
    error = caught.value
    assert (error.line, error.column) == (line, column), str(error)
    assert fragment in str(error)
    assert str(error).startswith(f"/home/me/.fetchmailrc:{line}:{column}: ")
    assert error.exit_code == 5


def test_errors_never_quote_a_whole_secret() -> None:
    secret = "x" * 60
    with pytest.raises(RCSyntaxError) as caught:
        parse(f"poll h user u limit {secret}\n", "rc", ENV)
    assert secret not in str(caught.value)


# --- properties --------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "poll",
        "skip",
        "user",
        "is",
        "here",
        "there",
        "keep",
        "no",
        "limit",
        "5",
        "-3",
        "proto",
        "pop3",
        "imap",
        "set",
        "daemon",
        "defaults",
        "*",
        "=",
        '"q s"',
        "'x'",
        "a",
        "b.example",
        ",",
        ";",
        "#c\n",
        "\n",
        "folder",
        "smtphost",
        "envelope",
        "aka",
        "mda",
        "ssl",
        "nokeep",
    ]
)


@given(st.lists(_WORDS, max_size=30))
def test_parse_raises_only_syntax_errors_and_dumps_stably(words: list[str]) -> None:
    text = " ".join(words) + "\n"
    try:
        config = parse(text, "rc", ENV)
    except RCSyntaxError:
        return
    assert configdump(config) == configdump(parse(text, "rc", ENV))


def test_explicit_empty_esmtp_name_and_password_stay_as_fetchmail_dumps_them() -> None:
    dump = configdump(parse('poll h esmtpname "" esmtppassword "" user u\n', "rc", ENV))
    assert '"esmtpname":"",' in dump and '"esmtppassword":"",' in dump
    assert '"esmtpname":"me",' in configdump(parse("poll h user u\n", "rc", ENV))


@pytest.mark.parametrize(
    "text",
    ["defaults proto kpop\npoll h proto rpop user u\n", "poll h proto kpop proto rpop user u\n"],
)
def test_rpop_on_the_kpop_port_is_refused_as_fetchmail_refuses_it(text: str) -> None:
    """`proto kpop` leaves the service kpop (port 1109): RPOP there needs a privileged port."""
    from fetchd.config.check import check_config
    from fetchd.errors import ConfigError

    with pytest.raises(ConfigError, match="RPOP requires a privileged port"):
        check_config(parse(text, "rc", ENV))
    check_config(parse("poll h proto rpop user u\n", "rc", ENV))  # port 110: fine


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("poll a user b there via x\n keep\n\npoll c user d\n", 1),  # at the option's last word
        ("poll a user b there keep\n envelope\n 2 X-To\n\npoll c user d\n", 3),
        ("poll a user b there\n aka x y\n\npoll c user d\n", 4),  # a list: at the word after it
    ],
)
def test_a_server_option_after_user_options_is_placed_as_fetchmail_places_it(
    text: str, line: int
) -> None:
    with pytest.raises(RCSyntaxError) as caught:
        parse(text, "rc", ENV)
    assert caught.value.line == line
    assert "comes after user options" in caught.value.message


@pytest.mark.parametrize("word", ["xoauth2", "oauthbearer"])
def test_fetchmail_7_oauth2_auth_types_only_after_auth(word: str) -> None:
    """`auth xoauth2|oauthbearer` names fetchmail 7's OAuth2 types; elsewhere the same word is a
    plain string, as fetchmail 6.4 reads it."""
    server, user = one_user(f"poll h auth {word} user u folder {word}")
    assert server.auth == word
    assert user.mailboxes == (word,)


@pytest.mark.parametrize(
    ("service", "port"),
    [(None, None), ("995", 995), (" 995", 995), ("+995", 995), ("pop3s", 995), ("kpop", 1109)],
)
def test_the_port_connected_to_is_the_one_fetchmail_picks(service: str | None, port: int) -> None:
    """fetchmail reads ``service`` with strtoul, then as a service name: so does the poll."""
    assert connect_port(service) == port
