"""The daemon itself: reload the config without a restart; the nodes sharing its database."""

from __future__ import annotations

from fastapi import APIRouter

from runyard.api import bodies, schemas
from runyard.api.deps import RunyardDep, SchemaBase
from runyard.api.errors import problem_responses

router = APIRouter(tags=["daemon"], responses=problem_responses(401, 500))


@router.post(
    "/api/daemon/reload",
    summary="Reload the config",
    responses=problem_responses(422),
)
async def reload_config(runyard: RunyardDep, base: SchemaBase) -> schemas.ReloadResponseBody:
    """Re-read the config file and apply it whole, or not at all.

    An invalid file is answered 422 with one error per problem, and the
    running config stays as it was. Runs in flight keep the definition they
    started with; host, port and data_dir apply only at the next restart.
    """
    return bodies.reload_body(await runyard.reload(), base)


@router.get("/api/cluster", summary="List the nodes")
async def list_nodes(runyard: RunyardDep, base: SchemaBase) -> schemas.ClusterResponseBody:
    """List the daemons sharing this database, each with its lease age and running runs.

    On PostgreSQL every daemon is a node that renews a lease; a node whose
    lease expired shows `expired` until another node takes its runs over.
    On SQLite the answer is this daemon alone.
    """
    return bodies.cluster_body(runyard.node_name, await runyard.cluster_nodes(), base)
