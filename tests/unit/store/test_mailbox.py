"""store.mailbox: the QueueStore's inbox loses no message and misses no wake-up."""

from __future__ import annotations

import threading

from nexo_actors.store.mailbox import Mailbox


def test_many_senders_one_receiver_every_message_once_in_each_senders_order() -> None:
    box = Mailbox()
    senders, each = 6, 5000
    got: list[tuple[int, int]] = []

    def receive() -> None:
        for _ in range(senders * each):
            got.append(box.get())

    receiver = threading.Thread(target=receive)
    receiver.start()
    threads = [threading.Thread(target=lambda s=s: [box.put((s, n)) for n in range(each)])
               for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    receiver.join(30)
    assert not receiver.is_alive(), f"receiver stuck after {len(got)} messages"
    for s in range(senders):
        assert [n for sender, n in got if sender == s] == list(range(each))
    assert box.empty() and box.qsize() == 0


def test_a_sleeping_receiver_is_always_woken() -> None:
    # Ping-pong: every get() finds the box empty and sleeps, so each round
    # races a put against the receiver going to sleep.
    ping, pong = Mailbox(), Mailbox()
    rounds = 5000

    def echo() -> None:
        for _ in range(rounds):
            pong.put(ping.get())

    t = threading.Thread(target=echo)
    t.start()
    for n in range(rounds):
        ping.put(n)
        assert pong.get() == n
    t.join(10)
    assert not t.is_alive()
