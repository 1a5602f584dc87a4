"""tfship's Invoke tasks, composed explicitly (as pyinvoke/invocations does): the everyday pipeline at the top
level, one collection per area. The repository's tasks.py (for `invoke` in a checkout) and the `tfship` command
(for an installed tfship, run from any folder) both serve this one namespace.

Every task is thin: parse flags, load the config, call one library function, print its result.
"""

from invoke import Collection

from tfship.tasks import clients, cluster, engine, model, pipeline, registry, web

ns = Collection(
    pipeline.export,
    pipeline.build,
    pipeline.push,
    pipeline.render,
    pipeline.deploy,
    pipeline.smoke_test,
    pipeline.status,
    pipeline.rollback,
    pipeline.release,
    pipeline.history,
    pipeline.destroy,
    pipeline.up,
    clients.predict,
    clients.evaluate,
)
ns.add_collection(Collection.from_module(engine))
ns.add_collection(Collection.from_module(model))
ns.add_collection(Collection.from_module(registry))
ns.add_collection(Collection.from_module(cluster))
ns.add_collection(Collection.from_module(web))
