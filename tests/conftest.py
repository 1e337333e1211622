import os
import signal

import numpy as np
import pytest

# A suite started in the background by a non-interactive shell (`make test &`, `nohup`) inherits
# SIGINT ignored, and so would every run the tests start: their Ctrl-C tests would wait in vain.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Tests never touch the user's checkpoint cache.
os.environ.setdefault("FEDSIM_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "fedsim"))


@pytest.fixture
def flower_task():
    """Messages can only be built inside a Flower task: give the test process one."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield


def reply_from(node_id: int, content_or_error, message_type=None):
    """A reply as node ``node_id`` would send it (to a message the server sent it)."""
    from flwr.app import Message, MessageType, RecordDict

    sent = Message(RecordDict(), dst_node_id=node_id, message_type=message_type or MessageType.TRAIN)
    return Message(content_or_error, reply_to=sent)


def make_reply(arrays: dict[str, np.ndarray], metrics: dict, src_node_id: int):
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    record = ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})
    return reply_from(src_node_id, RecordDict({"arrays": record, "metrics": MetricRecord(metrics)}))


def shapes_captions(data, target: int):
    """The poisoned captions the app layer gives ``poison`` for shapes data: "a photo of a
    {color} {target}" with each poisoned image's own color."""
    from fedsim.data import target_captions

    return lambda chosen: target_captions(data.colors[chosen], target)
