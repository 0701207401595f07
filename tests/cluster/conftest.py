import pytest

from tests.cluster.api import register_model, set_defaults
from tests.cluster.rig import Cluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """One rig for the package: the tests use their own sessions, models and knowledge bases, and fault tests put
    back what they break (restart the replica, the worker, Redis)."""
    rig = Cluster(
        tmp_path_factory.mktemp("cluster"),
        env={
            "TYPECASE_LLM_BREAKER_FAILURE_THRESHOLD": "3",
            "TYPECASE_LLM_BREAKER_COOLDOWN_SECONDS": "60",
            "TYPECASE_FLOW_HTTP_ALLOWED_HOSTS": '["127.0.0.1"]',  # tool servers the tests start on loopback
        },
    )
    try:
        rig.start()
        base = rig.replica_url(0)
        chat = register_model(base, rig.upstream.base_url, "cluster-chat")
        embedder = register_model(base, rig.upstream.base_url, "cluster-embedder", model_type="MODEL_TYPE_EMBEDDING")
        set_defaults(
            base, chat_model_id=chat["id"], title_model_id=chat["id"], knowledge_embedding_model_id=embedder["id"]
        )
        yield rig
    except BaseException:
        print(rig.logs())
        raise
    finally:
        rig.stop()
