"""fetchmail's command line: spellings, values, ordering, errors."""

from __future__ import annotations

import pytest

from fetchd.config import ParseEnvironment, parse
from fetchd.config.overrides import apply_overrides, select_entries
from fetchd.errors import ConfigError, ExitCode
from fetchd.options import Override, help_text, parse_args


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["-a"], "fetchall", True),
        (["--all"], "fetchall", True),
        (["--fetchall"], "fetchall", True),
        (["-k"], "keep", True),
        (["--keep"], "keep", True),
        (["-K"], "keep", False),
        (["--nokeep"], "keep", False),
        (["-F"], "flush", True),
        (["--limitflush"], "limitflush", True),
        (["-l", "5000"], "limit", 5000),
        (["--limit=5000"], "limit", 5000),
        (["-l5000"], "limit", 5000),
        (["-B", "7"], "fetchlimit", 7),
        (["-b", "3"], "batchlimit", 3),
        (["-e", "10"], "expunge", 10),
        (["-p", "imap"], "protocol", "IMAP"),
        (["--protocol", "pop3"], "protocol", "POP3"),
        (["-P", "1110"], "service", "1110"),
        (["--port", "995"], "service", "995"),
        (["-u", "joe"], "remote", "joe"),
        (["-t", "60"], "timeout", 60),
        (["-r", "INBOX,Lists"], "mailboxes", ("INBOX", "Lists")),
        (["-S", "mx/2525,localhost"], "smtphunt", ("mx/2525", "localhost")),
        (["-D", "example.org"], "smtpaddress", "example.org"),
        (["-m", "/usr/bin/procmail -d %T"], "mda", "/usr/bin/procmail -d %T"),
        (["-Z", "571,550"], "antispam", (571, 550)),
        (["-n"], "rewrite", False),
        (["--ssl"], "ssl", True),
        (["--sslcertck"], "sslcertck", True),
        (["--nosslcertck"], "sslcertck", False),
        (["--sslproto", "TLS1.2+"], "sslproto", "TLS1.2+"),
        (["--sslfingerprint", "AB:CD"], "sslfingerprint", "AB:CD"),
        (["--auth", "cram-md5"], "auth", "cram-md5"),
        (["--postmaster", "root"], "postmaster", "root"),
        (["--nobounce"], "bouncemail", False),
        (["--softbounce"], "softbounce", True),
        (["--nosoftbounce"], "softbounce", False),
        (["--invisible"], "invisible", True),
        (["--tracepolls"], "tracepolls", True),
        (["-d", "300"], "poll_interval", 300),
        (["--daemon", "60"], "poll_interval", 60),
        (["-L", "/tmp/log"], "logfile", "/tmp/log"),
        (["--syslog"], "syslog", True),
        (["--nosyslog"], "syslog", False),
        (["--idfile", "/tmp/ids"], "idfile", "/tmp/ids"),
        (["--idle"], "idle", True),
    ],
)
def test_each_flag_overrides_its_rc_key(argv: list[str], key: str, value: object) -> None:
    options = parse_args(argv)
    assert options.override(key) == value
    assert [item.key for item in options.overrides] == [key]


def test_the_last_of_contradicting_flags_wins() -> None:
    assert parse_args(["-k", "-K"]).override("keep") is False
    assert parse_args(["-K", "-k"]).override("keep") is True
    assert parse_args(["--nosyslog", "--syslog"]).override("syslog") is True


def test_levels_follow_fetchmail_structure() -> None:
    options = parse_args(["-d", "300", "-p", "pop3", "-k"])
    assert set(options.overrides) == {
        Override("globals", "poll_interval", 300),
        Override("server", "protocol", "POP3"),
        Override("user", "keep", True),
    }


def test_run_flags_and_hosts() -> None:
    options = parse_args(["-v", "-v", "-c", "-f", "-", "mail.example.org", "-N", "pop.example.net"])
    assert options.verbose == 2
    assert options.check and options.nodetach
    assert options.rcfile == "-"
    assert options.hosts == ("mail.example.org", "pop.example.net")


def test_combined_short_flags() -> None:
    options = parse_args(["-akv"])
    assert options.override("fetchall") is True
    assert options.override("keep") is True
    assert options.verbose == 1


def test_configdump_forms_do_not_swallow_a_host() -> None:
    assert parse_args(["--configdump", "pop.example.org"]).configdump == "python"
    dumped = parse_args(["--configdump=json", "pop.example.org"])
    assert dumped.configdump == "json"
    assert dumped.hosts == ("pop.example.org",)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-l", "big"], "'big' is not a number"),
        (["--no-such-flag"], "--no-such-flag"),
        (["-f"], "-f"),
    ],
)
def test_a_bad_command_line_is_a_syntax_error(argv: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_args(argv)
    assert caught.value.exit_code == ExitCode.SYNTAX
    assert fragment in str(caught.value)


def test_help_groups_the_flags() -> None:
    text = help_text()
    for heading in (
        "general:",
        "selecting messages:",
        "the server:",
        "TLS:",
        "delivery:",
        "running:",
    ):
        assert heading in text
    assert "--sslfingerprint" in text and "-K, --nokeep" in text


# --- choosing entries ------------------------------------------------------------------------

ENV = ParseEnvironment(login="me", home="/home/me", rcdir="/home/me")
RC = "poll a.example user x\nskip b.example user y\npoll c via a.example user z\n"


def test_no_names_polls_every_active_entry() -> None:
    config = parse(RC, "rc", ENV)
    assert [s.pollname for s in select_entries(config, ())] == ["a.example", "c"]


def test_a_skip_entry_runs_when_named_and_via_names_count() -> None:
    config = parse(RC, "rc", ENV)
    assert [s.pollname for s in select_entries(config, ("b.example",))] == ["b.example"]
    assert [s.pollname for s in select_entries(config, ("a.example",))] == ["a.example", "c"]


def test_an_unknown_name_becomes_an_entry_from_the_command_line() -> None:
    options = parse_args(["-p", "pop3", "-u", "joe", "-k", "pop.example.org"])
    config = apply_overrides(parse(RC, "rc", ENV), options)
    [server] = select_entries(config, options.hosts, options, ENV)
    assert (server.pollname, server.protocol) == ("pop.example.org", "POP3")
    assert (server.users[0].remote, server.users[0].keep) == ("joe", True)
    with pytest.raises(ConfigError):
        select_entries(config, ('bad"name',), options, ENV)


def test_overrides_apply_to_every_entry() -> None:
    config = apply_overrides(parse(RC, "rc", ENV), parse_args(["-l", "500", "-t", "9"]))
    assert {u.limit for s in config.servers for u in s.users} == {500}
    assert {s.timeout for s in config.servers} == {9}
