"""The console's command registry: longest prefix wins, unknown commands say so."""

import asyncio

from voicemail.console.commands import CommandError, Commands


def _commands() -> Commands:
    commands = Commands()

    async def peers(arguments: list[str]) -> str:
        return "all peers"

    async def peer(arguments: list[str]) -> str:
        if not arguments:
            raise CommandError("Usage: sip show peer <name>")
        return f"peer {arguments[0]}"

    commands.register("sip show peers", peers, "list the peers")
    commands.register("sip show peer <name>", peer, "one peer")
    return commands


def test_the_longest_registered_prefix_runs_with_the_rest_as_arguments() -> None:
    result = asyncio.run(_commands().run("SIP show peer 1000"))
    assert (result.ok, result.output) == (True, "peer 1000")
    assert asyncio.run(_commands().run("sip show peers")).output == "all peers"


def test_an_unknown_command_answers_as_asterisk_does() -> None:
    result = asyncio.run(_commands().run("frobnicate now"))
    assert not result.ok
    assert result.output == "No such command 'frobnicate now' (type 'help' for help)"


def test_a_failed_command_is_not_ok_and_says_why() -> None:
    result = asyncio.run(_commands().run("sip show peer"))
    assert (result.ok, result.output) == (False, "Usage: sip show peer <name>")


def test_completion_offers_the_next_words() -> None:
    commands = _commands()
    assert commands.completions("sip sh") == ["show"]
    assert commands.completions("sip show ") == ["peer", "peers"]
    assert commands.completions("") == ["sip"]
