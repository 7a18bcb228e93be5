"""The host lock on the bench's real hosts over real SSH: exclusive holders take turns, shared holders do not wait
for each other, a waiter's deadline names the holder, and a lock dies with its holder's connection."""

from __future__ import annotations

import threading
import time

import pytest

from components import hostlock, hosts
from components.hosts import SSHTarget

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
    entered = threading.Event()

    def hold():
        with hostlock.held(t, stack="gone", doing="starting kamal-proxy", timeout=5):
            entered.set()
            time.sleep(30)  # never let go: the connection will be cut under it

    threading.Thread(target=hold, daemon=True).start()
    assert entered.wait(10)
    hosts.close_all()  # the deployer's connection goes away, as when it is killed
    with hostlock.held(t, stack="next", doing="starting kamal-proxy", timeout=10):
        pass
