"""The single source of table and column names (one module per lake table: prompts, candidates,
scores, comparisons, selections, models, evals, picks) and the typed run configs (loop, generation,
policy, bootstrap, best-of-N, reward models, prompt sources, runner). Imports nothing from tasks/."""
from schemas import candidates, comparisons, evals, models, picks, prompts, scores, selections
from schemas.base import SchemaError, TableSpec

TABLES: dict[str, TableSpec] = {
    module.SPEC.name: module.SPEC
    for module in (prompts, candidates, scores, comparisons, selections, models, evals, picks)
}


def table_spec(name: str) -> TableSpec:
    """The spec of lake table `name`; raises SchemaError naming an unknown table."""
    try:
        return TABLES[name]
    except KeyError:
        raise SchemaError(
            f"unknown table {name!r} (tables: {', '.join(TABLES)})"
        ) from None


__all__ = ["TABLES", "SchemaError", "TableSpec", "table_spec"]
