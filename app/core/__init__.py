"""The floor every stage stands on: settings, records, frames, topics, the stage context.

Imports nothing else of edgewise.
"""
