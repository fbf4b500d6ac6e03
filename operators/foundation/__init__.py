"""The foundation every other layer stands on; it imports nothing of Sluice above it.

Object keys, time, conditions, status reading and writing, Events, the
reconcile loop and its wake-ups, and the cluster client: what the three
shells (Rollout, Application, SidecarSet) share.
"""
