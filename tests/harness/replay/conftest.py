import pytest

from tests.harness.replay.worlds import pre_period_world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """90 users, base trained 1 epoch: shared by the resume and Ray tests (built once per session)."""
    return pre_period_world(tmp_path_factory.mktemp("small-world"), users=90, videos=200, comments_per_video=6.0,
                            seed=8, base_epochs=1)
