"""The real bdh client, unmodified, against a real ``beadhub serve``.

Runs the binary found at ``$BDH`` (or ``bdh`` on PATH) through the flow a
team goes through: two worktrees of one repo onboard, read their status
and the policy, mail each other, chat (the waiting sender gets the answer
from the other worktree, and the waiting ends with the wait), reserve a
file and hit the other's reservation, list reservations, escalate, and,
when the Beads CLI is there (``$BD`` or ``bd`` on PATH), claim an issue
and have the other's claim of it refused. Neither binary is part of this
repository: build them from their public source (beadhub/bdh 464b0e0 with
aw v0.4.0; steveyegge/beads) and point ``BDH``/``BD`` at them.

tests/test_bdh_contract.py checks each of the client's rules over plain
HTTP on any machine; this module shows the client itself is satisfied.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import HubProcess, unique

BDH = os.environ.get("BDH") or shutil.which("bdh")
BD = os.environ.get("BD") or shutil.which("bd")

pytestmark = [
    pytest.mark.skipif(
        not BDH,
        reason="no bdh binary: set BDH=/path/to/bdh or put bdh on PATH "
        "(built from beadhub/bdh 464b0e0 with aw v0.4.0)",
    ),
    # Each test runs several whole bdh processes (each a few HTTP calls).
    pytest.mark.timeout(600),
]

#: One bdh command under a loaded CI machine; a command that hangs fails.
COMMAND_SECONDS = 90


@dataclass
class Worktree:
    path: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = COMMAND_SECONDS) -> subprocess.CompletedProcess[str]:
        assert BDH is not None
        return subprocess.run(
            [BDH, *args],
            cwd=self.path,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout + done.stderr

    def start(self, *args: str) -> subprocess.Popen[str]:
        assert BDH is not None
        return subprocess.Popen(
            [BDH, *args],
            cwd=self.path,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll a condition a bdh command reports; each try is a whole command."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@dataclass
class Team:
    hub: HubProcess
    alice: Worktree
    bob: Worktree
    slug: str
    origin: str
    init_output: dict[str, str]


def _git(cwd: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def team(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    root = tmp_path_factory.mktemp("bdh")
    home = root / "home"
    home.mkdir()
    hub = HubProcess(env={"DATABASE_URL": database_url}).start()
    # A repository no other test registered: init without a slug finds its project.
    name = unique("widgets")
    origin = f"git@github.com:acme/{name}.git"
    base = {
        "HOME": str(home),
        "PATH": os.pathsep.join(
            [str(Path(BD).parent)] * bool(BD) + [os.environ.get("PATH", "/usr/bin:/bin")]
        ),
        "BEADHUB_URL": hub.http_url,
        # bd runs in the foreground only: no daemon left behind by the test.
        "BEADS_NO_DAEMON": "1",
        "GIT_AUTHOR_NAME": "Juan",
        "GIT_AUTHOR_EMAIL": "juan@example.com",
        "GIT_COMMITTER_NAME": "Juan",
        "GIT_COMMITTER_EMAIL": "juan@example.com",
    }
    main = root / name
    main.mkdir()
    _git(main, base, "init", "-q")
    _git(main, base, "remote", "add", "origin", origin)
    _git(main, base, "commit", "-q", "--allow-empty", "-m", "init")
    _git(main, base, "worktree", "add", "-q", str(root / f"{name}-bob"), "-b", "bob")
    alice = Worktree(main, {**base, "BEADHUB_HUMAN": "Juan"})
    bob = Worktree(root / f"{name}-bob", {**base, "BEADHUB_HUMAN": "Maria"})
    slug = unique("widgets")
    try:
        outputs = {
            "alice": alice.ok(":init", "--project", slug, "--role", "frontend"),
            # No --project: the hub finds the repo's project; no --alias: the
            # hub suggests a free name (asked without a key).
            "bob": bob.ok(":init", "--role", "backend"),
        }
        yield Team(hub, alice, bob, slug, origin, outputs)
    finally:
        hub.stop()


def test_init_of_two_worktrees(team: Team):
    alice, bob = team.init_output["alice"], team.init_output["bob"]
    assert "Initialized BeadHub workspace" in alice and "malformed" not in alice
    assert f"project_slug: {team.slug}" in alice and "alias: alice-frontend" in alice
    assert f"project_slug: {team.slug}" in bob and "alias: bob-backend" in bob
    for tree in (team.alice, team.bob):
        assert (tree.path / ".beadhub").exists()


def test_init_with_a_taken_alias_says_so(team: Team):
    third = team.alice.path.parent / f"{team.alice.path.name}-third"
    _git(team.alice.path, team.alice.env, "worktree", "add", "-q", str(third), "-b", "third")
    tree = Worktree(third, team.alice.env)
    taken = tree.run(":init", "--alias", "bob-backend", "--role", "backend")
    out = taken.stdout + taken.stderr
    # bdh found "alias_exists" in the hub's answer.
    assert taken.returncode != 0
    assert "alias 'bob-backend' is already taken. Use --alias" in out, out
    assert not (third / ".beadhub").exists()


def test_status_and_policy(team: Team):
    status = team.bob.ok(":status")
    assert "Alias: bob-backend" in status and "**alice-frontend** — frontend" in status
    policy = team.bob.ok(":policy")
    assert "Policy: v1" in policy and "Role: backend" in policy


def test_policy_of_a_role_the_project_lacks_names_the_roles(team: Team):
    # bdh :init without --role and outside a terminal takes the role "agent".
    refused = team.bob.run(":policy", "--role", "agent")
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert 'role "agent" rejected by server (available roles: backend,' in out, out


def test_mail_send_list_and_open(team: Team):
    sent = team.bob.ok(":aweb", "mail", "send", "alice-frontend", "Login bug fixed.")
    assert "Sent mail to alice-frontend" in sent
    listed = team.alice.ok(":aweb", "mail", "list")
    assert "bob-backend: Login bug fixed." in listed
    opened = team.alice.ok(":aweb", "mail", "open", "bob-backend")
    assert "Mail from bob-backend" in opened and "Login bug fixed." in opened


def _waiting(tree: Worktree, sender: str) -> bool:
    pending = tree.ok(":aweb", "chat", "pending")
    return f"CHAT WAITING: {sender}" in pending


def test_chat_answered_from_the_other_worktree(team: Team):
    asking = team.alice.start(
        ":aweb", "chat", "send", "bob-backend", "Can you handle the API endpoints?",
        "--start-conversation",
    )  # fmt: skip
    try:
        until(lambda: _waiting(team.bob, "alice-frontend"), "bob sees alice waiting")
        notify = team.bob.ok(":aweb", "chat", "pending")
        assert "URGENT: alice-frontend is waiting for your response" in notify.replace("**", "")
        answer = team.bob.ok(
            ":aweb", "chat", "send", "alice-frontend", "Yes, I'll take them.", "--wait", "0"
        )
        assert "Message sent to alice-frontend" in answer
        out, _ = asking.communicate(timeout=COMMAND_SECONDS)
    finally:
        if asking.poll() is None:
            asking.kill()
    assert asking.returncode == 0, out
    assert "Chat from: bob-backend" in out and "Yes, I'll take them." in out
    # The sender got its answer and left: nobody is waiting any more.
    until(lambda: not _waiting(team.bob, "alice-frontend"), "the waiting ends with the reply")


def test_waiting_ends_when_the_sender_stops_waiting(team: Team):
    started = time.monotonic()
    gave_up = team.alice.run(":aweb", "chat", "send", "bob-backend", "Still there?", "--wait", "2")
    assert gave_up.returncode == 0, gave_up.stdout + gave_up.stderr
    assert time.monotonic() - started < COMMAND_SECONDS
    # bdh asked the hub for a 10-minute stream and hung up after 2 s: bob
    # must not be told alice is waiting.
    until(
        lambda: not _waiting(team.bob, "alice-frontend"), "the waiting ends when alice hangs up", 15
    )


def test_lock_and_lock_conflict_and_locks(team: Team):
    assert "Locked src/auth.py" in team.bob.ok(":aweb", "lock", "src/auth.py")
    clash = team.alice.run(":aweb", "lock", "src/auth.py")
    assert "reservation held by bob-backend" in clash.stdout + clash.stderr
    locks = team.alice.ok(":aweb", "locks")
    assert "src/auth.py — bob-backend" in locks


def test_reservations_and_status_show_the_teams_files(team: Team):
    # Needs the lock of the test before (module order): bob holds src/auth.py.
    listed = team.alice.ok(":reservations")
    assert "Other Agents' Reservations" in listed and "`src/auth.py` — bob-backend" in listed
    assert "No active reservations" not in listed
    assert "You have no active reservations" in team.alice.ok(":reservations", "--mine")
    status = team.alice.ok(":status")
    assert "**bob-backend**" in status and "src/auth.py" in status


def test_escalate(team: Team):
    escalated = team.alice.ok(":escalate", "Need human decision", "Alice and Bob both need auth.py")
    assert "Escalation created:" in escalated


@pytest.mark.skipif(not BD, reason="no bd binary: set BD=/path/to/bd or put bd on PATH")
def test_claim_of_an_issue_someone_else_holds_is_rejected(team: Team):
    created = team.alice.ok("create", "Payment form", "-p", "1", "--json")
    found = re.search(r'"id":\s*"([^"]+)"', created)
    assert found, created
    bead = found.group(1)
    claimed = team.alice.ok("update", bead, "--status", "in_progress")
    assert f"Updated issue: {bead}" in claimed
    refused = team.bob.run("update", bead, "--status", "in_progress")
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    assert f"REJECTED: {bead} is being worked on by alice-frontend (Juan)" in out


def test_dashboard_link_carries_a_key_the_page_reads(team: Team):
    printed = team.alice.ok(":dashboard", "--open=false")
    assert re.search(r"#api_key=aw_sk_[A-Za-z0-9_-]{32,}", printed), printed


def test_projects_list_without_a_key_is_a_clear_refusal(team: Team):
    refused = team.alice.run(":projects", "list")
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "BeadHub error (401)" in out
    assert "needs an api key" in out and team.slug not in out


def test_add_worktree_picks_a_free_name(team: Team):
    added = team.alice.ok(":add-worktree", "backend")
    # alice-frontend and bob-backend exist: neither alice- nor bob- is free.
    assert "Alias:     carol-backend" in added and "alias: carol-backend" in added
    assert "alice-backend" not in added
