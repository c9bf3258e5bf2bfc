# mkBlob builder: $out gets $sizeKiB KiB of pseudo-random bytes determined by $seedHex. Fast
# (about 1 s per 100 MiB) and incompressible: a random base chunk (gzip of random hex digits),
# then each further chunk is the previous one mapped through a random byte permutation (one
# 256-cycle, so no chunk repeats within 256 chunks; the chunk size grows with the blob).
set -e
size=$((sizeKiB * 1024))
seed=$((0x$seedHex))
chunk=65536
if [ $((size / 200)) -gt $chunk ]; then chunk=$(((size / 200 + 4095) / 4096 * 4096)); fi
awk -v s="$seed" -v n=$((chunk * 3)) 'BEGIN {
  srand(s)
  for (i = 0; i < n; i += 32)
    printf "%08x%08x%08x%08x", int(rand() * 4294967296), int(rand() * 4294967296), int(rand() * 4294967296), int(rand() * 4294967296)
}' | gzip -1 -n | head -c $chunk > base
[ "$(wc -c < base)" -eq $chunk ]
from=$(awk 'BEGIN { for (i = 0; i < 256; i++) printf "\\%03o", i }')
to=$(awk -v s="$seed" 'BEGIN {
  srand(s + 1)
  for (i = 0; i < 256; i++) p[i] = i
  for (i = 255; i > 0; i--) { j = int(rand() * i); t = p[i]; p[i] = p[j]; p[j] = t }
  for (i = 0; i < 256; i++) printf "\\%03o", p[i]
}')
: > $out
left=$size
while [ $left -gt 0 ]; do
  if [ $left -ge $chunk ]; then cat base >> $out; left=$((left - chunk)); else head -c $left base >> $out; left=0; fi
  [ $left -eq 0 ] || { tr "$from" "$to" < base > next; mv next base; }
done
