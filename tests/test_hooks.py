"""Middleware hooks looked up once (pipeline/streams/hooks.py): same calls, order and errors as Dramatiq's."""

from __future__ import annotations

import logging

import dramatiq
import pytest
from dramatiq.middleware import Middleware, MiddlewareError

from pipeline import RedisStreamsBroker


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def before_enqueue(self, broker, message, delay) -> None:
        self.calls.append(f"before {self.name}")

    def after_enqueue(self, broker, message, delay) -> None:
        self.calls.append(f"after {self.name}")


class Refuses(Middleware):
    def before_enqueue(self, broker, message, delay) -> None:
        raise MiddlewareError("not this one")


class Breaks(Middleware):
    def after_enqueue(self, broker, message, delay) -> None:
        raise RuntimeError("broken hook")


def message() -> dramatiq.Message:
    return dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={})


def test_hooks_run_in_dramatiqs_order(redis_url: str, redis_client) -> None:
    calls: list[str] = []
    broker = RedisStreamsBroker(redis_url, middleware=[Recorder("a", calls), Middleware(), Recorder("b", calls)])
    broker.declare_queue("default")
    broker.enqueue(message())
    assert calls == ["before a", "before b", "after b", "after a"]
    assert len(broker._hooks.hooks("before_enqueue", broker.middleware)) == 2  # the no-op base hook is skipped
    broker.close()


def test_adding_middleware_is_seen_by_the_next_message(redis_url: str, redis_client) -> None:
    calls: list[str] = []
    broker = RedisStreamsBroker(redis_url, middleware=[Recorder("a", calls)])
    broker.declare_queue("default")
    broker.enqueue(message())
    broker.add_middleware(Recorder("b", calls))
    broker.enqueue(message())
    assert calls == ["before a", "after a", "before a", "before b", "after b", "after a"]
    broker.close()


def test_a_hook_set_on_the_instance_is_called(redis_url: str, redis_client) -> None:
    calls: list[str] = []
    plain = Middleware()
    plain.before_enqueue = lambda broker, message, delay: calls.append("instance hook")  # type: ignore[method-assign]
    broker = RedisStreamsBroker(redis_url, middleware=[plain])
    broker.declare_queue("default")
    broker.enqueue(message())
    assert calls == ["instance hook"]
    broker.close()


def test_middleware_error_stops_an_enqueue_and_other_errors_are_logged(redis_url: str, redis_client, caplog) -> None:
    broker = RedisStreamsBroker(redis_url, middleware=[Refuses()])
    broker.declare_queue("default")
    with pytest.raises(MiddlewareError, match="not this one"):
        broker.enqueue(message())
    assert redis_client.xlen("default") == 0
    broker.close()

    broker = RedisStreamsBroker(redis_url, middleware=[Breaks()])
    broker.declare_queue("default")
    with caplog.at_level(logging.CRITICAL):
        broker.enqueue(message())
    assert redis_client.xlen("default") == 1
    assert "Unexpected failure in after_enqueue" in caplog.text
    broker.close()


class OnOneMessage(Middleware):
    """Hooks of signals about one message, which the hook table calls with the message alone."""

    def __init__(self, calls: list[object], refuse: bool = False) -> None:
        self.calls = calls
        self.refuse = refuse

    def before_process_message(self, broker, message) -> None:
        self.calls.append(("before", message))
        if self.refuse:
            raise MiddlewareError("refused")

    def after_ack(self, broker, message) -> None:
        self.calls.append(("after_ack", message))
        raise RuntimeError("broken ack hook")

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        self.calls.append(("after", message, result, exception))


def test_hooks_of_one_message_signals_get_it_and_keep_dramatiqs_error_rules(
    redis_url: str, redis_client, caplog
) -> None:
    calls: list[object] = []
    broker = RedisStreamsBroker(redis_url, middleware=[OnOneMessage(calls), OnOneMessage(calls, refuse=True)])
    delivered = message()
    with pytest.raises(MiddlewareError, match="refused"):
        broker.emit_before("process_message", delivered)
    with caplog.at_level(logging.CRITICAL):
        broker.emit_after("ack", delivered)  # both hooks run, each failure logged
    broker.emit_after("process_message", delivered, result=42)
    failure = ValueError("failed")
    broker.emit_after("process_message", delivered, exception=failure)
    assert calls == [
        ("before", delivered),
        ("before", delivered),
        ("after_ack", delivered),
        ("after_ack", delivered),
        ("after", delivered, 42, None),
        ("after", delivered, 42, None),
        ("after", delivered, None, failure),
        ("after", delivered, None, failure),
    ]
    assert caplog.text.count("Unexpected failure in after_ack") == 2
    broker.close()


def test_a_routing_middleware_becomes_the_brokers_one_dispatcher(redis_url: str, redis_client) -> None:
    from middleware.routing import CapabilityRouter

    broker = RedisStreamsBroker(redis_url, middleware=[])
    assert broker.dispatcher is None
    router = CapabilityRouter()
    broker.add_middleware(router)
    assert broker.dispatcher is router
    assert "enqueue_bounded" in broker.scripts  # attached: the domain's scripts are the broker's now
    with pytest.raises(ValueError, match="already has a dispatcher"):
        broker.add_middleware(CapabilityRouter())
    broker.close()
