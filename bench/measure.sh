# Sourced by the bench scripts: `measure TOOL STEP CMD...` runs CMD with a
# cold page cache under /usr/bin/time -v, then appends
# "TOOL,STEP,SECONDS,MAX_RSS_KIB" to $CSV (needs $SCRATCH and $CSV).
measure() {
  local tool=$1 step=$2; shift 2
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -v -o "$SCRATCH/time.txt" "$@" > "$SCRATCH/$tool-$step.log" 2>&1
  sync
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$SCRATCH/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$SCRATCH/time.txt")
  echo "$tool,$step,$secs,$rss" | tee -a "$CSV"
}
