"""The Lua scripts of the task queue: each is one atomic step on one cluster slot.

Keys (``P`` is the hash-tagged prefix ``{prefix}:``): ``P t:<id>`` a task's hash
(``d`` payload as enqueued, ``s`` status, ``q`` queue, ``p`` priority, ``m`` its member in
the ready set, ``a`` attempt, ``l`` lease, ``w`` worker, ``e`` error, ``r`` run_at, ``x``
expires_at, ``f`` finished at, ``fb`` the list of tasks ended with it (see below),
``n`` insertion number, ``dp`` dependencies, ``b`` the claim batch whose lease it
holds ('' or missing: none), ``rs`` and ``rx`` its result and
the result's expiry when written with the completion; ``l`` and ``b`` are read only
while the task is RUNNING); ``P q:<queue>``
the ready tasks of a queue, scored ``-priority`` with members ``<due µs>:<id>`` so equal
priorities are claimed oldest first; ``P delayed`` (by run_at); leases: one per claim
batch, ``P bl`` (batch number by lease end) with ``P bl:<n>`` its task ids and ``P bln``
(batch number -> tasks still holding it), deleted with its last task; ``P leases`` (by
lease end) the leases of single tasks (extended by a heartbeat, or written by an older
version); ``P ttl`` (by expires_at), ``P finished`` (by end time), or for tasks that
a completion ended together ``P finishedb`` (number ``n`` by end time, from the counter
``P fbn``) with ``P fb:<n>`` their ids (a task requeued or deleted leaves it; readers
still check the task's ``s`` and ``f``); ``P all`` and
``P qa:<queue>`` (by insertion number) for listing; ``P waiting`` (by insertion number)
the WAITING tasks, so the dependency sweep never scans (ids no longer WAITING found
there are dropped by the listing); ``P counts`` (``queue\\tstatus`` -> number) for O(1)
counts; ``P deps:<id>`` the tasks waiting on ``id``, and ``P hasdeps``, set once any task
waited on another (completions look for dependents only then); ``P w:<queue>`` wake
tokens for blocked consumers; ``P expired`` tasks found expired at claim time; results
are in their task's hash (see above) or ``P r:<id>``, with ``P results`` (by time: those
of their own key) and ``P rexp`` (by expiry: both kinds), or for results written by
one completion that expire in the same second ``P rexpb`` (number ``n`` by the latest
of those expiries, from the counter ``P rxbn``) with ``P rxb:<n>`` their task ids (the
sweep deletes a result from the hash only if its ``rx`` is due); each result
written is announced on the channel ``P rdone`` for waiters, several per message (one
message per script call): each is a NUL byte, the id's length, ``:``, the length of the
result's bytes, ``:``, the id, then the bytes (none when over 8 KiB: the waiter reads
the key), so a waiter usually needs no read after the announcement.

Decisions about a task's life (dependency outcomes, release walk, messages) are made in
Python with :mod:`omniq.rules`; the scripts apply them with compare-and-set checks.
"""

from __future__ import annotations

COMMON = r"""
local P = ARGV[1]
local function tkey(id) return P .. 't:' .. id end
local function cnt(q, s, n) redis.call('HINCRBY', P .. 'counts', q .. '\t' .. s, n) end
local function move(q, from, to) cnt(q, from, -1); cnt(q, to, 1) end
local function finish(id, now) redis.call('ZADD', P .. 'finished', now, id) end
local function ready(q, p, m) redis.call('ZADD', P .. 'q:' .. q, -tonumber(p), m) end
local function wake(q)
  local k = P .. 'w:' .. q
  if redis.call('LLEN', k) < 64 then redis.call('RPUSH', k, '1') end
end
-- a delayed task; due before every other one, it wakes the queue's blocked consumers
-- so that they shorten their block to its due time
local function delay(q, at, id)
  local first = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
  redis.call('ZADD', P .. 'delayed', at, id)
  if #first == 0 or tonumber(at) < tonumber(first[2]) then wake(q) end
end
-- a task's lease batch from its ``b`` field: nil when missing or '' (a completion
-- clears it with '': a claim by an older version, which writes no ``b``, finds none)
local function batch_of(v)
  if v and v ~= '' then return v end
  return nil
end
-- (queue, lease batch or nil) of a task whose current claim is ``attempt``, else nil
local function fenced(k, attempt)
  local h = redis.call('HMGET', k, 's', 'a', 'q', 'b')
  if h[1] == 'running' and h[2] == attempt then return h[3], batch_of(h[4]) end
  return nil
end
-- ``n`` tasks of lease batch ``b`` no longer hold its lease: the batch goes with the last
local function unbatch(b, n)
  if redis.call('HINCRBY', P .. 'bln', b, -n) <= 0 then
    redis.call('ZREM', P .. 'bl', b)
    redis.call('DEL', P .. 'bl:' .. b)
    redis.call('HDEL', P .. 'bln', b)
  end
end
-- a RUNNING task's claim ends: its lease (its batch's, or its own) is released
local function unlease(id, b)
  if b then unbatch(b, 1) else redis.call('ZREM', P .. 'leases', id) end
end
-- one command over many arguments (in slices: Lua's unpack has a limit)
local function bulk(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
-- counter changes gathered by queue (one HINCRBY per queue and status)
local function add_moves(moves, from, to)
  for q, c in pairs(moves) do cnt(q, from, -c); cnt(q, to, c) end
end
-- one result announcement (see the module docstring)
local function announcement(id, data)
  if #data > 8192 then data = '' end
  return '\0' .. #id .. ':' .. #data .. ':' .. id .. data
end
-- a result kept in the task's hash (see COMPLETE) moves to a key of its own, as those
-- written by ``set``, when the task is deleted or requeued (dropped when expired)
local function move_result(k, id, now)
  local h = redis.call('HMGET', k, 'rs', 'rx', 'f')
  if not h[1] then return end
  redis.call('HDEL', k, 'rs', 'rx')
  local rk = P .. 'r:' .. id
  if not h[2] then
    redis.call('SET', rk, h[1])
  elseif tonumber(h[2]) > now then
    redis.call('SET', rk, h[1], 'PX', math.max(math.floor((tonumber(h[2]) - now) * 1000), 1))
    -- its expiry entry may be its completion's list (see COMPLETE): one of its own
    redis.call('ZADD', P .. 'rexp', h[2], id)
  else
    redis.call('ZREM', P .. 'rexp', id)
    return
  end
  redis.call('ZADD', P .. 'results', h[3] or now, id)
end
-- a task leaves the list of tasks its completion ended together (``fb``, see COMPLETE)
local function unlist(id, fb)
  if not fb then return end
  local lk = P .. 'fb:' .. fb
  if redis.call('LREM', lk, 1, id) > 0 and redis.call('EXISTS', lk) == 0 then
    redis.call('ZREM', P .. 'finishedb', fb)
  end
end
local function delete_task(id, now)
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'q', 'm', 'b', 'fb')
  if not h[1] then return 0 end
  if h[1] == 'running' and batch_of(h[4]) then unbatch(h[4], 1) end
  unlist(id, h[5])
  move_result(k, id, now)
  cnt(h[2], h[1], -1)
  redis.call('ZREM', P .. 'q:' .. h[2], h[3])
  redis.call('ZREM', P .. 'qa:' .. h[2], id)
  redis.call('DEL', k, P .. 'deps:' .. id)
  redis.call('ZREM', P .. 'all', id)
  redis.call('ZREM', P .. 'delayed', id)
  redis.call('ZREM', P .. 'leases', id)
  redis.call('ZREM', P .. 'ttl', id)
  redis.call('ZREM', P .. 'finished', id)
  redis.call('ZREM', P .. 'waiting', id)
  return 1
end
"""

#: ARGV: P, now, nchecks, (dep id, expected status or '')*, ntasks, 10 fields per task.
#: Returns {'retry'} when a dependency changed since it was read, else (status, x) pairs.
ENQUEUE = (
    COMMON
    + r"""
local now = tonumber(ARGV[2])
local nchecks = tonumber(ARGV[3])
local i = 4
for c = 1, nchecks do
  local cur = redis.call('HGET', tkey(ARGV[i]), 's') or ''
  if cur ~= ARGV[i + 1] then return {'retry'} end
  i = i + 2
end
local n = tonumber(ARGV[i]); i = i + 1
local out = {}
for t = 1, n do
  local id, data, q, p, m = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local r, x, s, e, deps = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  i = i + 10
  local k = tkey(id)
  local ex = redis.call('HMGET', k, 's', 'x')
  if ex[1] then
    out[#out + 1] = ex[1]; out[#out + 1] = ex[2] or ''
  else
    local seq = redis.call('INCR', P .. 'seq')
    redis.call('HSET', k, 'd', data, 's', s, 'q', q, 'p', p, 'm', m, 'a', 0, 'n', seq)
    if r ~= '' then redis.call('HSET', k, 'r', r) end
    if x ~= '' then redis.call('HSET', k, 'x', x); redis.call('ZADD', P .. 'ttl', x, id) end
    if e ~= '' then redis.call('HSET', k, 'e', e) end
    if deps ~= '' then redis.call('HSET', k, 'dp', deps) end
    redis.call('ZADD', P .. 'all', seq, id)
    redis.call('ZADD', P .. 'qa:' .. q, seq, id)
    cnt(q, s, 1)
    if s == 'pending' then
      if r ~= '' and tonumber(r) > now then
        delay(q, r, id)
      else
        ready(q, p, m); wake(q)
      end
    elseif s == 'waiting' then
      for dep in string.gmatch(deps, '[^\n]+') do redis.call('SADD', P .. 'deps:' .. dep, id) end
      redis.call('ZADD', P .. 'waiting', seq, id)
      redis.call('SET', P .. 'hasdeps', '1')
    else
      redis.call('HSET', k, 'f', ARGV[2]); finish(id, now)
    end
    out[#out + 1] = s; out[#out + 1] = ''
  end
end
return out
"""
)

#: The fast path of a bulk enqueue: tasks ready now, without TTL or dependencies.
#: ARGV: P, (queue, priority, member, payload)*. Returns (index, status, x) of the tasks
#: that already existed (the others are new and PENDING).
ENQUEUE_PLAIN = (
    COMMON
    + r"""
local n = (#ARGV - 1) / 4
local seq = redis.call('INCRBY', P .. 'seq', n) - n
local out = {}
local added, woke = {}, {}
for t = 0, n - 1 do
  local b = 2 + t * 4
  local q, p, m = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local id = string.sub(m, 18)
  local k = tkey(id)
  local ex = redis.call('HMGET', k, 's', 'x')
  if ex[1] then
    out[#out + 1] = t; out[#out + 1] = ex[1]; out[#out + 1] = ex[2] or ''
  else
    local nseq = seq + t + 1
    redis.call('HSET', k, 'd', ARGV[b + 3], 's', 'pending', 'q', q, 'p', p, 'm', m, 'a', 0,
      'n', nseq)
    redis.call('ZADD', P .. 'all', nseq, id)
    redis.call('ZADD', P .. 'qa:' .. q, nseq, id)
    ready(q, p, m)
    added[q] = (added[q] or 0) + 1
  end
end
for q, c in pairs(added) do
  cnt(q, 'pending', c)
  local k = P .. 'w:' .. q
  local room = 64 - redis.call('LLEN', k)
  for _ = 1, math.min(room, c) do redis.call('RPUSH', k, '1') end
end
return out
"""
)

#: KEYS: the ready sets of the queues, in claim order.
#: ARGV: P, now, limit, worker id, lease in seconds, expired message, clock offset or ''.
#: With a clock offset (the client's clock minus the server's), ``now`` is the server's
#: ``TIME`` plus that offset: the claim a consumer pipelines behind its blocking pop runs
#: when the pop returns, which may be long after the client sent it.
#: Returns {next wake-up time or '', {id, payload, attempt, ...}, drained, lease end}:
#: ``drained`` is 1 when every queue was found empty. A queue found empty loses its wake
#: tokens (they are stale: whatever becomes ready later pushes a new one); a queue left
#: non-empty because the limit was reached gets one, so another blocked consumer takes
#: the rest.
CLAIM = (
    COMMON
    + r"""
local now, nows = tonumber(ARGV[2]), ARGV[2]
if ARGV[7] and ARGV[7] ~= '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[7])
  nows = string.format('%.6f', now)
end
local until_ = string.format('%.6f', now + tonumber(ARGV[5]))
local limit = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', nows, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', P .. 'delayed', id)
  local h = redis.call('HMGET', tkey(id), 's', 'q', 'p', 'm')
  if h[1] == 'pending' then ready(h[2], h[3], h[4]); wake(h[2]) end
end
local function lapse(id, batch)
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'q', 'p', 'm', 'b')
  if h[1] == 'running' and batch_of(h[5]) == batch then
    redis.call('HSET', k, 's', 'pending')
    redis.call('HDEL', k, 'l', 'b')
    move(h[2], 'running', 'pending')
    ready(h[2], h[3], h[4]); wake(h[2])
  end
end
-- leases of their own (extended by a heartbeat, or written by an older version)
local lapsed = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. nows, 'LIMIT', 0, 1000)
for _, id in ipairs(lapsed) do
  redis.call('ZREM', P .. 'leases', id)
  lapse(id, nil)
end
-- leases of claim batches: the batch's tasks still RUNNING under it come back
local lapsedb = redis.call('ZRANGEBYSCORE', P .. 'bl', '-inf', '(' .. nows, 'LIMIT', 0, 100)
for _, b in ipairs(lapsedb) do
  for _, id in ipairs(redis.call('LRANGE', P .. 'bl:' .. b, 0, -1)) do lapse(id, b) end
  redis.call('ZREM', P .. 'bl', b)
  redis.call('DEL', P .. 'bl:' .. b)
  redis.call('HDEL', P .. 'bln', b)
end
local out = {}
local claimed = 0
local emptied = 0
local batch, moves = {}, {}
local b = nil
for qi = 1, #KEYS do
  while claimed < limit do
    local top = redis.call('ZPOPMIN', KEYS[qi], limit - claimed)
    if #top == 0 then
      emptied = qi
      redis.call('DEL', P .. 'w:' .. string.sub(KEYS[qi], #P + 3))
      break
    end
    for j = 1, #top, 2 do
      local id = string.sub(top[j], 18)
      local k = tkey(id)
      local h = redis.call('HMGET', k, 's', 'x', 'r', 'q', 'a', 'd')
      if h[1] == 'pending' then
        if h[2] and tonumber(h[2]) <= now then
          redis.call('HSET', k, 's', 'expired', 'e', ARGV[6], 'f', nows)
          move(h[4], 'pending', 'expired'); finish(id, now)
          redis.call('ZREM', P .. 'ttl', id)
          redis.call('RPUSH', P .. 'expired', id)
        elseif h[3] and tonumber(h[3]) > now then
          redis.call('ZADD', P .. 'delayed', h[3], id)
        else
          local a = tonumber(h[5] or 0) + 1
          -- the batch is named after its first task's claim (unique: attempts grow)
          if not b then b = id .. ':' .. a end
          redis.call('HSET', k, 's', 'running', 'a', a, 'l', until_, 'w', ARGV[4], 'b', b)
          batch[#batch + 1] = id
          moves[h[4]] = (moves[h[4]] or 0) + 1
          out[#out + 1] = id
          out[#out + 1] = h[6]
          out[#out + 1] = a
          claimed = claimed + 1
        end
      end
    end
  end
  if emptied < qi then
    if redis.call('ZCARD', KEYS[qi]) > 0 then wake(string.sub(KEYS[qi], #P + 3)) end
    break
  end
end
if #batch == 1 then
  -- a lease of its own is fewer writes for one task
  redis.call('HDEL', tkey(batch[1]), 'b')
  redis.call('ZADD', P .. 'leases', until_, batch[1])
elseif b then
  -- one lease for the whole claim: the batch's tasks, how many still hold it, its end
  bulk('RPUSH', P .. 'bl:' .. b, batch)
  redis.call('HSET', P .. 'bln', b, #batch)
  redis.call('ZADD', P .. 'bl', until_, b)
end
add_moves(moves, 'pending', 'running')
local nxt = ''
for _, z in ipairs({'delayed', 'leases', 'bl'}) do
  local f = redis.call('ZRANGE', P .. z, 0, 0, 'WITHSCORES')
  if #f > 0 and (nxt == '' or tonumber(f[2]) < tonumber(nxt)) then nxt = f[2] end
end
return {nxt, out, emptied == #KEYS and 1 or 0, until_}
"""
)

#: ARGV: P, now, n, (attempt, id, result expires_at or '', result bytes or '')*.
#: A result is written into the task's hash (``rs``, its expiry ``rx``): no key of its
#: own, listed through ``P finished``; a result of the same task kept in its own key
#: (written by ``set``, or by an older version) is deleted so that one result stands.
#: Returns per task 0 (not the current claim: nothing written), 1 (completed, no task
#: waits on it) or 2 (completed, some task waits on it).
COMPLETE = (
    COMMON
    + r"""
local call = redis.call
local nows = ARGV[2]
local n = tonumber(ARGV[3])
local tp, rp = P .. 't:', P .. 'r:'
local out = {}
local done, ttl, fin, rexp, norexp, ann, moves, gone = {}, {}, {}, {}, {}, {}, {}, {}
local batches = {}
-- announcements only when someone listens (a waiter subscribes before it reads the
-- result). In a cluster NUMSUB counts one node's subscribers: sharded channels then.
local listened = call('PUBSUB', 'NUMSUB', P .. 'rdone')[2] > 0
-- results kept in keys of their own are all indexed in ``P results``: with none at all,
-- no key is looked up
local ownres = call('EXISTS', P .. 'results') == 1
-- dependents are looked up only once some task ever waited on another
local deps = call('EXISTS', P .. 'hasdeps') == 1
-- tasks that end together share one entry of ``P finishedb``: a list of their ids
-- (each hash names it in ``fb``: a task deleted or requeued leaves it)
local nb = n > 1 and call('INCR', P .. 'fbn') or nil
local fbf = nb and 'fb' or 'b'  -- alone: no list (``b`` is written twice instead)
for i = 0, n - 1 do
  local b = 4 + i * 4
  local id = ARGV[b + 1]
  local k = tp .. id
  local h = call('HMGET', k, 's', 'a', 'q', 'x', 'e', 'rx', 'b')
  if h[1] == 'running' and h[2] == ARGV[b] then
    -- the lease field stays: it is read only while the task is RUNNING
    local data, exp = ARGV[b + 3], ARGV[b + 2]
    if data == '' then
      call('HSET', k, 's', 'success', 'f', nows, 'b', '', fbf, nb or '')
    elseif exp ~= '' then
      call('HSET', k, 's', 'success', 'f', nows, 'b', '', fbf, nb or '', 'rs', data, 'rx', exp)
      rexp[#rexp + 1] = exp
      rexp[#rexp + 1] = id
    else
      call('HSET', k, 's', 'success', 'f', nows, 'b', '', fbf, nb or '', 'rs', data)
      if h[6] then call('HDEL', k, 'rx'); norexp[#norexp + 1] = id end
    end
    if h[5] then call('HDEL', k, 'e') end
    local lb = batch_of(h[7])
    if lb then batches[lb] = (batches[lb] or 0) + 1 else done[#done + 1] = id end
    if h[4] then ttl[#ttl + 1] = id end
    fin[#fin + 1] = id
    moves[h[3]] = (moves[h[3]] or 0) + 1
    if data ~= '' then
      if ownres then gone[#gone + 1] = rp .. id end
      if listened then ann[#ann + 1] = announcement(id, data) end
    end
    out[#out + 1] = (deps and 1 + call('EXISTS', P .. 'deps:' .. id)) or 1
  else
    out[#out + 1] = 0
  end
end
if #gone > 0 then
  -- results kept in keys of their own for these tasks: the ones just written replace them
  local old = {}
  for j = 1, #gone, 1000 do
    if call('EXISTS', unpack(gone, j, math.min(j + 999, #gone))) > 0 then
      for m = j, math.min(j + 999, #gone) do
        if call('DEL', gone[m]) > 0 then old[#old + 1] = string.sub(gone[m], #rp + 1) end
      end
    end
  end
  bulk('ZREM', P .. 'results', old)
  for _, id in ipairs(old) do norexp[#norexp + 1] = id end
end
bulk('ZREM', P .. 'leases', done)
for lb, c in pairs(batches) do unbatch(lb, c) end
bulk('ZREM', P .. 'ttl', ttl)
if #fin == 1 then
  -- alone: an entry of its own (its ``fb`` names no list)
  finish(fin[1], nows)
elseif #fin > 1 then
  bulk('RPUSH', P .. 'fb:' .. nb, fin)
  call('ZADD', P .. 'finishedb', nows, nb)
end
bulk('ZREM', P .. 'rexp', norexp)
-- the results' expiries: those of one second share one entry (a list of their tasks,
-- due at the latest of them: each result is hidden from readers at its own, and the
-- sweep skips the tasks whose ``rx`` changed since); a result alone in its second gets
-- an entry of its own
if #rexp > 2 then
  local secs, own = {}, {}
  for j = 1, #rexp, 2 do
    local e = tonumber(rexp[j])
    local s = math.floor(e)
    local g = secs[s]
    if not g then
      secs[s] = {e, rexp[j], rexp[j + 1]}
    else
      if e > g[1] then g[1], g[2] = e, rexp[j] end
      g[#g + 1] = rexp[j + 1]
    end
  end
  for _, g in pairs(secs) do
    if #g == 3 then
      own[#own + 1] = g[2]; own[#own + 1] = g[3]
    else
      local nb = call('INCR', P .. 'rxbn')
      call('RPUSH', P .. 'rxb:' .. nb, unpack(g, 3))
      call('ZADD', P .. 'rexpb', g[2], nb)
    end
  end
  rexp = own
end
bulk('ZADD', P .. 'rexp', rexp)
add_moves(moves, 'running', 'success')
if #ann > 0 then call('PUBLISH', P .. 'rdone', table.concat(ann)) end
return out
"""
)

#: ARGV: P, now, id, attempt, retry_at or '', error or '', member for the retry.
FAIL = (
    COMMON
    + r"""
local now = tonumber(ARGV[2])
local id, retry, err = ARGV[3], ARGV[5], ARGV[6]
local k = tkey(id)
local q, b = fenced(k, ARGV[4])
if not q then return 0 end
unlease(id, b)
redis.call('HDEL', k, 'l', 'b')
if err ~= '' then redis.call('HSET', k, 'e', err) else redis.call('HDEL', k, 'e') end
if retry == '' then
  redis.call('HSET', k, 's', 'failed', 'f', ARGV[2])
  redis.call('ZREM', P .. 'ttl', id)
  move(q, 'running', 'failed'); finish(id, now)
else
  redis.call('HSET', k, 's', 'pending', 'r', retry, 'm', ARGV[7])
  move(q, 'running', 'pending')
  if tonumber(retry) > now then
    delay(q, retry, id)
  else
    ready(q, redis.call('HGET', k, 'p'), ARGV[7]); wake(q)
  end
end
return 1
"""
)

#: ARGV: P, id, attempt.
UNCLAIM = (
    COMMON
    + r"""
local id = ARGV[2]
local k = tkey(id)
local q, b = fenced(k, ARGV[3])
if not q then return 0 end
unlease(id, b)
redis.call('HINCRBY', k, 'a', -1)
redis.call('HSET', k, 's', 'pending')
redis.call('HDEL', k, 'l', 'b')
move(q, 'running', 'pending')
local h = redis.call('HMGET', k, 'p', 'm')
ready(q, h[1], h[2]); wake(q)
return 1
"""
)

#: ARGV: P, id, attempt, lease end.
HEARTBEAT = (
    COMMON
    + r"""
local k = tkey(ARGV[2])
local q, b = fenced(k, ARGV[3])
if not q then return 0 end
-- the task leaves its claim batch for a lease of its own
if b then unbatch(b, 1); redis.call('HDEL', k, 'b') end
redis.call('HSET', k, 'l', ARGV[4])
redis.call('ZADD', P .. 'leases', ARGV[4], ARGV[2])
return 1
"""
)

#: ARGV: P, now, id, reason.
CANCEL = (
    COMMON
    + r"""
local now = tonumber(ARGV[2])
local id = ARGV[3]
local k = tkey(id)
local h = redis.call('HMGET', k, 's', 'q', 'm', 'x', 'b')
local s = h[1]
if not s then return 0 end
if s ~= 'pending' and s ~= 'waiting' and s ~= 'running' then return 0 end
if s ~= 'running' and h[4] and tonumber(h[4]) <= now then return 0 end
if s == 'running' then unlease(id, batch_of(h[5])) end
redis.call('HSET', k, 's', 'cancelled', 'e', ARGV[4], 'f', ARGV[2])
redis.call('HDEL', k, 'l', 'b')
redis.call('ZREM', P .. 'q:' .. h[2], h[3])
redis.call('ZREM', P .. 'delayed', id)
redis.call('ZREM', P .. 'ttl', id)
if s == 'waiting' then redis.call('ZREM', P .. 'waiting', id) end
move(h[2], s, 'cancelled'); finish(id, now)
return 1
"""
)

#: ARGV: P, now, expired message, batch. Returns {ids expired, how many TTL entries seen}.
EXPIRE = (
    COMMON
    + r"""
local now = tonumber(ARGV[2])
local out = redis.call('LRANGE', P .. 'expired', 0, -1)
redis.call('DEL', P .. 'expired')
local ids = redis.call('ZRANGEBYSCORE', P .. 'ttl', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'ttl', id)
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'q', 'm')
  if h[1] == 'pending' or h[1] == 'waiting' then
    redis.call('HSET', k, 's', 'expired', 'e', ARGV[3], 'f', ARGV[2])
    redis.call('ZREM', P .. 'q:' .. h[2], h[3])
    redis.call('ZREM', P .. 'delayed', id)
    if h[1] == 'waiting' then redis.call('ZREM', P .. 'waiting', id) end
    move(h[2], h[1], 'expired'); finish(id, now)
    out[#out + 1] = id
  end
end
return {out, #ids}
"""
)

#: ARGV: P, ids... Drops from ``P waiting`` the ids whose task is not WAITING.
UNWAIT = (
    COMMON
    + r"""
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', tkey(ARGV[i]), 's') ~= 'waiting' then
    n = n + redis.call('ZREM', P .. 'waiting', ARGV[i])
  end
end
return n
"""
)

#: ARGV: P, before, limit, now. Deletes finished tasks that ended before ``before``, up
#: to ``limit`` index entries: ids of ``P finished``, then ids taken from the lists of
#: ``P finishedb`` (a task listed there is deleted only while it is still final and
#: its ``f`` is before ``before``: it may have been requeued since, or deleted).
#: Returns how many tasks were deleted (entries taken: at most 4 times ``limit``).
PRUNE = (
    COMMON
    + r"""
local now, before, limit = tonumber(ARGV[4]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. ARGV[2], 'LIMIT', 0,
  limit)
local n, taken = 0, #ids
for _, id in ipairs(ids) do n = n + delete_task(id, now) end
local final = {success = true, failed = true, cancelled = true, expired = true}
while n < limit and taken < 4 * limit do
  local b = redis.call('ZRANGEBYSCORE', P .. 'finishedb', '-inf', '(' .. ARGV[2], 'LIMIT', 0, 1)
  if #b == 0 then break end
  local lk = P .. 'fb:' .. b[1]
  local part = redis.call('LPOP', lk, limit - n)
  if part then
    for _, id in ipairs(part) do
      local h = redis.call('HMGET', tkey(id), 's', 'f')
      if h[1] and final[h[1]] and h[2] and tonumber(h[2]) < before then
        n = n + delete_task(id, now)
      end
    end
    taken = taken + #part
  end
  if redis.call('EXISTS', lk) == 0 then redis.call('ZREM', P .. 'finishedb', b[1]) end
end
return n
"""
)

#: ARGV: P, now, ids... Deletes those tasks.
DELETE = (
    COMMON
    + r"""
local now = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do n = n + delete_task(ARGV[i], now) end
return n
"""
)

#: ARGV: P, now, nready, ready ids..., ncancel, (id, reason)*, ended ids...
#: Applies one step of the release walk to tasks still WAITING; returns {ready, cancelled}.
RELEASE = (
    COMMON
    + r"""
local now = tonumber(ARGV[2])
local i = 3
local nr = tonumber(ARGV[i]); i = i + 1
local ready_out, cancelled_out = {}, {}
for c = 1, nr do
  local id = ARGV[i]; i = i + 1
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'q', 'p', 'm', 'r')
  if h[1] == 'waiting' then
    redis.call('HSET', k, 's', 'pending')
    redis.call('ZREM', P .. 'waiting', id)
    move(h[2], 'waiting', 'pending')
    if h[5] and tonumber(h[5]) > now then
      delay(h[2], h[5], id)
    else
      ready(h[2], h[3], h[4]); wake(h[2])
    end
    ready_out[#ready_out + 1] = id
  end
end
local nc = tonumber(ARGV[i]); i = i + 1
for c = 1, nc do
  local id, reason = ARGV[i], ARGV[i + 1]; i = i + 2
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'q')
  if h[1] == 'waiting' then
    redis.call('HSET', k, 's', 'cancelled', 'e', reason, 'f', ARGV[2])
    redis.call('ZREM', P .. 'waiting', id)
    redis.call('ZREM', P .. 'ttl', id)
    move(h[2], 'waiting', 'cancelled'); finish(id, now)
    cancelled_out[#cancelled_out + 1] = id
  end
end
for j = i, #ARGV do redis.call('DEL', P .. 'deps:' .. ARGV[j]) end
return {ready_out, cancelled_out}
"""
)

#: ARGV: P, id, data, score or '', mode ('save' | 'update' | 'cas'), expected bytes.
SCHEDULE_PUT = r"""
local P = ARGV[1]
local id = ARGV[2]
local mode = ARGV[5]
local cur = redis.call('HGET', P .. 'sched', id)
if mode == 'update' and not cur then return 0 end
if mode == 'cas' and cur ~= ARGV[6] then return 0 end
redis.call('HSET', P .. 'sched', id, ARGV[3])
if ARGV[4] ~= '' then
  redis.call('ZADD', P .. 'sched:due', ARGV[4], id)
else
  redis.call('ZREM', P .. 'sched:due', id)
end
return 1
"""

#: ARGV: P, now, id, attempt read, new payload, new expires_at or ''. Puts an ended task
#: (final, or queued past its TTL) back to PENDING if its attempt is still the one read.
#: Returns 1 when it did, else 0.
REQUEUE = (
    COMMON
    + r"""
local now = tonumber(ARGV[2])
local id = ARGV[3]
local k = tkey(id)
local h = redis.call('HMGET', k, 's', 'q', 'p', 'm', 'a', 'x', 'fb')
local s = h[1]
if not s or h[5] ~= ARGV[4] then return 0 end
local ended = s == 'success' or s == 'failed' or s == 'cancelled' or s == 'expired'
if not ended and not ((s == 'pending' or s == 'waiting') and h[6] and tonumber(h[6]) <= now) then
  return 0
end
move_result(k, id, now)
unlist(id, h[7])
redis.call('HSET', k, 's', 'pending', 'd', ARGV[5])
redis.call('HDEL', k, 'e', 'l', 'w', 'f', 'r', 'b', 'fb')
if ARGV[6] ~= '' then
  redis.call('HSET', k, 'x', ARGV[6]); redis.call('ZADD', P .. 'ttl', ARGV[6], id)
else
  redis.call('HDEL', k, 'x'); redis.call('ZREM', P .. 'ttl', id)
end
redis.call('ZREM', P .. 'finished', id)
redis.call('ZREM', P .. 'delayed', id)
redis.call('LREM', P .. 'expired', 0, id)
move(h[2], s, 'pending')
ready(h[2], h[3], h[4]); wake(h[2])
return 1
"""
)


#: KEYS: the task's hash, the result's own key. A task's result: the one in its hash
#: (written with its completion), else the one in a key of its own.
RESULT_GET = r"""
local v = redis.call('HGET', KEYS[1], 'rs')
if v then return v end
return redis.call('GET', KEYS[2])
"""


#: ARGV: P, now, limit. Deletes expiry entries due by ``now``, about ``limit`` results'
#: worth: a task id (its own key and its hash's result), or a list of tasks that
#: completed together (the hash's result of each whose ``rx`` is still due; a newer
#: result has a later one). Returns {results looked at, results deleted}.
RESULTS_SWEEP = r"""
local P, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = 0
local ids = redis.call('ZRANGEBYSCORE', P .. 'rexp', '-inf', ARGV[2], 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('DEL', P .. 'r:' .. id)
  redis.call('HDEL', P .. 't:' .. id, 'rs', 'rx')
  redis.call('ZREM', P .. 'results', id)
  redis.call('ZREM', P .. 'rexp', id)
  n = n + 1
end
local seen = #ids
while seen < limit do
  local b = redis.call('ZRANGEBYSCORE', P .. 'rexpb', '-inf', ARGV[2], 'LIMIT', 0, 1)
  if #b == 0 then break end
  local lk = P .. 'rxb:' .. b[1]
  local listed = redis.call('LRANGE', lk, 0, -1)
  for _, id in ipairs(listed) do
    local k = P .. 't:' .. id
    local rx = redis.call('HGET', k, 'rx')
    if rx and tonumber(rx) <= now then
      redis.call('HDEL', k, 'rs', 'rx')
      n = n + 1
    end
  end
  redis.call('DEL', lk)
  redis.call('ZREM', P .. 'rexpb', b[1])
  seen = seen + math.max(#listed, 1)
end
return {seen, n}
"""
