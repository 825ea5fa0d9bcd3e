"""The event contract: one Avro schema per event (avro/*.avsc), every released version of
each (released/*.N.avsc), the topic map (topics.py, read from infra/topics.toml) and the one
(de)serialiser every producer and consumer uses (serde.py)."""
