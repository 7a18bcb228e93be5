"""The host lock on the bench's real hosts over real SSH: exclusive holders take turns, shared holders do not wait
for each other, a waiter's deadline names the holder, and a lock dies with its holder's connection."""

from __future__ import annotations

import threading
import time

import pytest

from components import hostlock, hosts
from components.hosts import SSHTarget
from tests.conftest import at_once

pytestmark = pytest.mark.integration


def target(bench, i: int = 0) -> SSHTarget:
    h = bench.hosts[i]
    return SSHTarget(host=h.address, port=h.port, user=h.user, keys=(bench.identity_file,),
                     known_hosts=bench.known_hosts)


def test_exclusive_holders_take_turns_and_a_deadline_names_the_holder(bench):
    t = target(bench)
    with hostlock.held(t, stack="shop/staging", doing="starting kamal-proxy", timeout=5):
        holders = hostlock.holders(t)
        assert [(h["stack"], h["doing"], h["mode"]) for h in holders] == [
            ("shop/staging", "starting kamal-proxy", "exclusive")]
        started = time.monotonic()
        with pytest.raises(hostlock.LockTimeout, match=r"removing kamal-proxy waited 1s for the host lock, held by "
                                                       r"stack shop/staging \(starting kamal-proxy, exclusive"):
            with hostlock.held(t, stack="shop/production", doing="removing kamal-proxy", timeout=1):
                pass
        assert time.monotonic() - started < 10
    with hostlock.held(t, stack="shop/production", doing="removing kamal-proxy", timeout=5):
        pass  # free again once the first holder let go


def test_shared_holders_do_not_wait_for_each_other_but_exclude_an_exclusive_one(bench):
    t = target(bench)
    with hostlock.held(t, stack="a", doing="routing a", timeout=5, shared=True):
        started = time.monotonic()
        with hostlock.held(t, stack="b", doing="routing b", timeout=5, shared=True):
            assert time.monotonic() - started < 3
        with pytest.raises(hostlock.LockTimeout):
            with hostlock.held(t, stack="c", doing="removing kamal-proxy", timeout=1):
                pass


def test_the_image_lock_is_apart_from_the_proxy_lock(bench):
    """Builds share the image lock and keep a removal of images waiting, but never the proxy's lock: a deploy
    building its image does not hold up another destination's routing or proxy start."""
    t = target(bench)
    with hostlock.held(t, stack="a", doing="building a:v2", timeout=5, shared=True, lock="images"):
        started = time.monotonic()
        with hostlock.held(t, stack="b", doing="starting kamal-proxy", timeout=5):
            assert time.monotonic() - started < 3
        with hostlock.held(t, stack="b", doing="building b:v2", timeout=5, shared=True, lock="images"):
            pass
        assert [h["stack"] for h in hostlock.holders(t, "images")] == ["a"]
        with pytest.raises(hostlock.LockTimeout, match=r"pruning images of b waited 1s for the host's images lock, "
                                                       r"held by stack a \(building a:v2, shared images lock"):
            with hostlock.held(t, stack="b", doing="pruning images of b", timeout=1, lock="images"):
                pass
    with hostlock.held(t, stack="b", doing="pruning images of b", timeout=5, lock="images"):
        pass


def test_a_lock_dies_with_its_holders_connection(bench):
    t = target(bench)
    entered, done = threading.Event(), threading.Event()
    seen: list[Exception] = []

    def hold():
        try:
            with hostlock.held(t, stack="gone", doing="starting kamal-proxy", timeout=5):
                entered.set()
                done.wait(30)  # never let go: the connection will be cut under it
        except Exception as exc:  # noqa: BLE001 - what the holder learns, checked below
            seen.append(exc)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert entered.wait(10)
    hosts.close_all()  # the deployer's connection goes away, as when it is killed
    with hostlock.held(t, stack="next", doing="starting kamal-proxy", timeout=10):
        pass
    done.set()
    holder.join(20)
    # the holder does not go on as if it still had the lock: the end of its block says it was lost
    assert [type(e).__name__ for e in seen] == ["LockLost"], seen


def _at_once(calls, deadline_s: float) -> list:
    """`at_once`, every call returning."""
    results = at_once(calls, deadline_s)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    return results


def _exclusive_is_refused(t) -> bool:
    try:
        with hostlock.held(t, stack="intruder", doing="removing kamal-proxy", timeout=1):
            return False
    except hostlock.LockTimeout:
        return True


def test_a_broken_connection_elsewhere_and_the_reconnect_never_drop_a_held_lock(bench):
    """Another thread's call finds the shared connection broken: it is dropped and the next call reconnects. The
    lock, on its own connection, is still held throughout."""
    from components.errors import HostUnreachable
    t = target(bench)
    with hostlock.held(t, stack="a", doing="routing a", timeout=5, shared=True) as lock:
        before = hosts.connection(t)
        before.ssh.get_transport().close()  # the shared connection goes (the lock's is another)
        with pytest.raises(HostUnreachable):
            with hosts.docker_errors(t, "listing containers"):
                before.docker.containers()  # a call under way on it
        assert hosts.client(t).ping() and hosts.connection(t) is not before  # reconnected
        lock.check()
        assert [h["stack"] for h in hostlock.holders(t)] == ["a"]
        assert _exclusive_is_refused(t)


def test_a_lock_that_was_lost_is_not_believed_held(bench):
    """Its holding process on the host ended (`shipyard lock release`; the same as its connection dying): the
    holder learns it at its next check, and a block that ran on without checking fails when it ends."""
    t = target(bench)
    with pytest.raises(hostlock.LockLost, match=r"the host lock taken for starting kamal-proxy was lost before "
                                                r"replacing kamal-proxy"):
        with hostlock.held(t, stack="a", doing="starting kamal-proxy", timeout=5) as lock:
            lock.check()
            assert [h["stack"] for h in hostlock.release(t)] == ["a"]
            lock.check("replacing kamal-proxy")
    with pytest.raises(hostlock.LockLost, match=r"was lost while it ran"):
        with hostlock.held(t, stack="a", doing="starting kamal-proxy", timeout=5):
            hostlock.release(t)
    with hostlock.held(t, stack="b", doing="starting kamal-proxy", timeout=5) as lock:
        lock.check()  # free, and taken again


def test_more_sessions_than_sshd_allows_wait_their_turn_and_drop_no_lock(bench):
    """sshd allows 10 sessions per connection (MaxSessions). Many commands, Docker API calls and locks at once on
    one host: each waits for a session or connection of its own rather than being refused, the shared connection
    is never taken for broken, and no lock is lost."""
    t = target(bench)
    hosts.close_all()
    with hostlock.held(t, stack="a", doing="routing a", timeout=5, shared=True) as lock:
        transport = hosts.connection(t).ssh.get_transport()

        def command(i: int) -> str:
            return hosts.run(t, ["sh", "-c", f"sleep 0.3; echo {i}"], doing=f"command {i}")[1]

        def shared_lock(i: int) -> str:
            with hostlock.held(t, stack=f"s{i}", doing=f"routing s{i}", timeout=10, shared=True) as mine:
                time.sleep(0.3)
                mine.check()
            return f"s{i}"

        calls = [lambda i=i: command(i) for i in range(16)] + [lambda: hosts.client(t).ping()] * 16 + \
            [lambda i=i: shared_lock(i) for i in range(4)]
        results = _at_once(calls, deadline_s=60)
        assert results == [str(i) for i in range(16)] + [True] * 16 + [f"s{i}" for i in range(4)]
        assert hosts.connection(t).ssh.get_transport() is transport  # never dropped as broken
        lock.check()
        assert _exclusive_is_refused(t)
