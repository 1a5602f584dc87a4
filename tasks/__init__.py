"""tfship's Invoke tasks: the pipeline at the top level, and one collection per area.

Every task is thin: parse flags, load the config, call one library function, print its result.
"""

from invoke import Collection

from tasks import cluster, engine, model, pipeline, registry, web

ns = Collection()
for name in pipeline.TOP_LEVEL:
    ns.add_task(getattr(pipeline, name.replace("-", "_")), name=name)
ns.add_collection(Collection.from_module(engine))
ns.add_collection(Collection.from_module(model))
ns.add_collection(Collection.from_module(registry))
ns.add_collection(Collection.from_module(cluster))
ns.add_collection(Collection.from_module(web))
