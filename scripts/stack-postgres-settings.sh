# Sourced by scripts/stack.sh (uses its pg_psql, pg_local, pg_version, as_root, say, die,
# wait_until): the PostgreSQL settings `stack.sh up` gives the local cluster for sustained ingest,
# and `stack.sh pg-defaults`, which takes them back.
#
# Debian's defaults halve the ingest rate once the tables outgrow memory: random keys make nearly
# every index insert dirty a page not written since the last checkpoint, a 1 GB WAL budget brings
# a checkpoint every few seconds, and the first change of a page after each one logs all 8 KB of
# it. Set with ALTER SYSTEM (postgresql.auto.conf), so postgresql.conf stays as the package wrote
# it and `pg-defaults` can take them back; reasons and measured effect: docs/postgresql.md.
pg_tuned=(shared_buffers effective_cache_size max_wal_size wal_compression checkpoint_timeout
  checkpoint_completion_target)

# Memory the cluster may use, MB: the machine's, or its cgroup's limit when lower.
mem_mb() {
  local mb limit f
  mb="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
  for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    [[ -r $f ]] || continue
    limit="$(<"$f")"
    if [[ $limit =~ ^[0-9]+$ ]] && ((limit / 1048576 < mb)); then mb=$((limit / 1048576)); fi
  done
  printf '%s' "$mb"
}

# MB in the unit PostgreSQL reads: 4096 -> 4GB, 1500 -> 1500MB.
pg_size() { if (($1 % 1024 == 0)); then printf '%sGB' $(($1 / 1024)); else printf '%sMB' "$1"; fi; }

# The settings for this machine, one `name value` per line.
pg_wanted() {
  local mem shared cache data free wal compression
  mem="$(mem_mb)"
  [[ $mem =~ ^[0-9]+$ ]] || return 1
  # A quarter of memory, as measured at 4 GB; more mostly doubles what the OS caches anyway.
  shared=$((mem / 4))
  if ((shared > 4096)); then shared=4096; elif ((shared < 128)); then shared=128; fi
  # A planner hint only (no memory is taken): what PostgreSQL and the OS cache can hold together.
  cache=$((mem * 3 / 4 / 1024 * 1024))
  ((cache >= 1024)) || cache=1024
  # 16 GB of WAL between checkpoints, or a quarter of the data directory's free disk when that
  # is less, never below the 1 GB default: the WAL can reach max_wal_size between checkpoints.
  data="$(pg_psql -tAc 'show data_directory')" || return 1
  free="$(df -Pm "$data" 2>/dev/null | awk 'NR == 2 {print $4}')"
  wal=16384
  if [[ $free =~ ^[0-9]+$ ]] && ((free / 4 < wal)); then wal=$((free / 4)); fi
  ((wal >= 1024)) || wal=1024
  # lz4 compresses page images at a fraction of pglz's CPU; a server built without lz4 lists
  # only pglz, and before PostgreSQL 15 the setting is a boolean where on means pglz.
  compression="$(pg_psql -tAc "select coalesce(array_to_string(enumvals, ','), vartype)
    from pg_settings where name = 'wal_compression'")" || return 1
  [[ ,$compression, == *,lz4,* ]] && compression=lz4 || compression=on
  printf '%s %s\n' shared_buffers "$(pg_size "$shared")" \
    effective_cache_size "$(pg_size "$cache")" \
    max_wal_size "$(pg_size "$wal")" \
    wal_compression "$compression" \
    checkpoint_timeout 15min \
    checkpoint_completion_target 0.9
}

# Restarts the cluster when a changed setting waits for a restart (shared_buffers), unless
# other clients are connected (tests of a running `make test`, say): then it says so, and a
# later `up` restarts it once nobody is.
pg_restart_if_pending() {
  local pending others auto
  pending="$(pg_psql -tAc "select string_agg(name, ', ') from pg_settings where pending_restart")"
  [[ -n $pending ]] || return 0
  others="$(pg_psql -tAc "select count(*) from pg_stat_activity
    where backend_type = 'client backend' and pid <> pg_backend_pid()")"
  if [[ $others != 0 ]]; then
    say "postgres: $pending waits for a restart; $others other session(s) connected, so not now" \
      "('scripts/stack.sh up' again restarts it once none is)"
    return 0
  fi
  auto="$(pg_psql -tAc 'show data_directory')/postgresql.auto.conf"
  say "postgres: restarting cluster $(pg_version)/main for $pending"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main restart 9>&- || true
  if ! wait_until "$wait_secs" pg_login_ok; then
    # A server that cannot get the new shared memory would stay down: start it with the old
    # value rather than leave the machine without PostgreSQL.
    as_root sed -i '/^shared_buffers[[:space:]]*=/d' "$auto"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start 9>&- || true
    wait_until "$wait_secs" pg_login_ok || die "postgres: does not start again (see /var/log/postgresql/)"
    die "postgres: did not start with the new shared_buffers (see /var/log/postgresql/); removed it" \
      "from $auto and started it as before; WM_STACK_PG_TUNE=0 leaves the settings alone"
  fi
}

pg_tune() {
  if [[ ${WM_STACK_PG_TUNE:-1} == 0 ]]; then
    say "postgres: settings left alone (WM_STACK_PG_TUNE=0)"
    return 0
  fi
  if ! pg_local; then
    say "postgres: $pg_host is not this machine; its settings are left alone (docs/postgresql.md)"
    return 0
  fi
  local wanted name value changed=() shown=()
  local -A held=()
  wanted="$(pg_wanted)" || die "postgres: cannot read what the settings should be"
  while IFS='|' read -r name value; do
    [[ -n $name ]] && held[$name]="$value"
  done < <(pg_psql -tAc "select name, setting from pg_file_settings
    where sourcefile like '%/postgresql.auto.conf' order by seqno")
  while read -r name value; do
    shown+=("$name=$value")
    [[ ${held[$name]:-} == "$value" ]] && continue
    pg_psql -c "alter system set $name = '$value'" >/dev/null \
      || die "postgres: ALTER SYSTEM SET $name = '$value' failed"
    changed+=("$name")
  done <<<"$wanted"
  if ((${#changed[@]} == 0)); then
    say "postgres: set for sustained ingest: ${shown[*]} (undo: scripts/stack.sh pg-defaults)"
    pg_restart_if_pending
    return 0
  fi
  pg_psql -tAc 'select pg_reload_conf()' >/dev/null
  # The reload is a signal: give the server a moment to read the file before asking what waits
  # for a restart.
  sleep 0.5
  say "postgres: ALTER SYSTEM for sustained ingest (docs/postgresql.md): ${shown[*]}"
  pg_restart_if_pending
  say "postgres: undo with 'scripts/stack.sh pg-defaults' (ALTER SYSTEM RESET ${pg_tuned[*]}; restart)"
}

# ALTER SYSTEM RESET of what pg_tune sets: postgresql.conf's values, or the built-in defaults.
pg_defaults() {
  pg_login_ok || die "postgres: cannot log in on $pg_host:$pg_port"
  pg_local || die "postgres: $pg_host is not this machine; not changing its settings"
  local name
  for name in "${pg_tuned[@]}"; do
    pg_psql -c "alter system reset $name" >/dev/null || die "postgres: ALTER SYSTEM RESET $name failed"
  done
  pg_psql -tAc 'select pg_reload_conf()' >/dev/null
  sleep 0.5  # as in pg_tune: the reload is a signal
  say "postgres: ALTER SYSTEM RESET ${pg_tuned[*]}"
  pg_restart_if_pending
  say "postgres: now $(pg_psql -tAc "select string_agg(name || '=' || current_setting(name), ' ')
    from unnest(string_to_array('${pg_tuned[*]}', ' ')) as name")"
}
