"""Lua scripts that do several of the stores' commands in one Redis round trip.

Each script runs exactly the commands the separate calls would (same keys, same
TTLs, same order), only without waiting for a reply between them. txredisapi's
``eval`` sends a script's text once per connection and then only its SHA1
(``EVALSHA``), falling back to the text when Redis has forgotten it.
"""

from __future__ import annotations

#: Store a field of a stored message (HSET + EXPIRE); optionally read another field of
#: the same hash back (HGET + EXPIRE: the same TTL again, so one EXPIRE does for both)
#: and count a rate (INCR + EXPIRE of its bucket).
#:
#: KEYS[1]: the hash; KEYS[2] (optional): the rate bucket.
#: ARGV: field, value, TTL of the hash, field to read back ("" for none), TTL of the
#: bucket. Returns ``{added (0/1), value read back or nil}``.
STORE = """
local added = redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
local read = false
if ARGV[4] ~= '' then
  read = redis.call('hget', KEYS[1], ARGV[4])
end
if KEYS[2] then
  redis.call('incr', KEYS[2])
  redis.call('expire', KEYS[2], ARGV[5])
end
return {added, read}
"""

#: Store an outbound record (HSET + EXPIRE), number its message on the channel's queue
#: and count it at its priority (``QueueStore.accept``: HINCRBY of ``seq``, HINCRBY of
#: the priority's field) and, optionally, count a rate (INCR + EXPIRE of its bucket).
#: The API's send: everything it does before publishing the message, in one round trip.
#:
#: KEYS[1]: the record's hash; KEYS[2]: the queue's hash; KEYS[3] (optional): the rate
#: bucket. ARGV: field, value, TTL of the record's hash, the priority's field, TTL of the
#: bucket. Returns the message's number on the queue (``seq``).
STORE_AND_ACCEPT = """
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
local seq = redis.call('hincrby', KEYS[2], 'seq', 1)
redis.call('hincrby', KEYS[2], ARGV[4], 1)
if KEYS[3] then
  redis.call('incr', KEYS[3])
  redis.call('expire', KEYS[3], ARGV[5])
end
return seq
"""
