"""Child processes edgewise starts and stops by PID: Tansu, mosquitto, PostgreSQL.

Imports nothing else of edgewise.
"""
