"""The .fetchmailrc: lexer and parser (pure), the frozen model, loading from disk, dumps."""

from fetchd.config.dump import configdump, configdump_json
from fetchd.config.load import default_rcfile, load_rcfile
from fetchd.config.model import Config, RCGlobals, Server, User
from fetchd.config.parser import ParseEnvironment, parse

__all__ = [
    "Config",
    "ParseEnvironment",
    "RCGlobals",
    "Server",
    "User",
    "configdump",
    "configdump_json",
    "default_rcfile",
    "load_rcfile",
    "parse",
]
