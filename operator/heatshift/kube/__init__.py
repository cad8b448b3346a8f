"""The Kubernetes adapter: cluster objects in, snapshot out; plan in, patches and Events out.

One module per concern:

- :mod:`heatshift.kube.login`: the one login, as kubectl does it (kubeconfig, exec plugins,
  in-cluster), on ``kubernetes_asyncio``.
- :mod:`heatshift.kube.client`: the verbs heatshift uses on that client, retries and typed errors.
- :mod:`heatshift.kube.hints`: job annotations (deadline, max delay, duration, power, sites).
- :mod:`heatshift.kube.workloads`: Jobs and bare Pods as :class:`Workload` records.
- :mod:`heatshift.kube.selection`: which HeatPolicy manages which workload.
- :mod:`heatshift.kube.snapshot`: workloads, LeafSites, nodes and readings into a Snapshot.
- :mod:`heatshift.kube.meters`: metering sources built from LeafSite specs, time-bounded.
- :mod:`heatshift.kube.apply`: the part of a plan that starts now, as idempotent patches.
- :mod:`heatshift.kube.events`: Events in words, each warning posted once.
- :mod:`heatshift.kube.admission`: the webhook's hold patches for new Jobs and Pods.
- :mod:`heatshift.kube.status`: LeafSite and HeatPolicy status from a planning cycle.
- :mod:`heatshift.kube.view`: the watched view the cycles read; :mod:`heatshift.kube.informer`
  keeps its Jobs and Pods (and the webhook's HeatPolicies and Namespaces) by list and watch.
- :mod:`heatshift.kube.placements`: cycles place one at a time, counting releases not seen yet.
- :mod:`heatshift.kube.cycle`: one planning cycle, snapshot to applied plan.

Translation functions are pure (dicts in, dicts or patches out); only ``login``, ``client``,
``informer``, ``meters``, ``events``, ``apply`` and ``cycle`` do I/O. Kopf is not imported here:
``heatshift.handlers`` wires it.
"""
