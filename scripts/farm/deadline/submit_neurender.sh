#!/usr/bin/env bash
# Submit a neurender shot to AWS Thinkbox Deadline as four dependent CommandLine jobs:
#   passes (Blender) -> anchors -> render chunks (one Deadline task per chunk, <STARTFRAME>-<ENDFRAME>) -> merge
# Every step is idempotent (finished frames skipped, atomic outputs), so Deadline's requeue/retry is safe.
#
# Usage: submit_neurender.sh SHOT.blend OUT_ROOT FRAMES [CHUNK] [OVERLAP] -- [neurender settings flags...]
#   e.g. submit_neurender.sh /show/sh010.blend /show/neural/sh010 1-240 24 4 -- --look /show/looks/toon.nrlook
# Needs deadlinecommand on PATH; `neurender` and `blender` on the workers (set NEURENDER / BLENDER to full paths).
# Put the GPU workers in a group (DEADLINE_GROUP, default "gpu") and keep ConcurrentTasks=1 per GPU.
set -euo pipefail

BLEND=$1 OUT=$2 FRAMES=$3 CHUNK=${4:-24} OVERLAP=${5:-4}
shift $(( $# < 5 ? $# : 5 )); [[ ${1:-} == "--" ]] && shift
EXTRA="$*"
NEURENDER=${NEURENDER:-neurender}
BLENDER=${BLENDER:-blender}
GROUP=${DEADLINE_GROUP:-gpu}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PASSES="$OUT/passes" FRAMES_DIR="$OUT/frames" ANCHORS="$OUT/frames/anchors"
NAME=$(basename "$BLEND" .blend)

submit() {  # prints the new job's id ("JobID=..." in deadlinecommand's output)
  deadlinecommand -SubmitCommandLineJob -name "$1" -executable "$2" -arguments "$3" -frames "$4" \
    -chunksize "$5" -group "$GROUP" -prop "BatchName=neurender $NAME" ${6:+-prop "JobDependencies=$6"} \
    | sed -n 's/^JobID=//p'
}

passes=$(submit "$NAME passes" "$BLENDER" \
  "-b <QUOTE>$BLEND<QUOTE> --python <QUOTE>$HERE/write_passes.py<QUOTE> -- --out <QUOTE>$PASSES<QUOTE> --frames $FRAMES" \
  0 1 "")
anchors=$(submit "$NAME anchors" "$NEURENDER" \
  "anchors <QUOTE>$PASSES<QUOTE> --out <QUOTE>$ANCHORS<QUOTE> --frames $FRAMES --progress json $EXTRA" 0 1 "$passes")
# Deadline cuts FRAMES into tasks of CHUNK frames; each task renders <STARTFRAME>-<ENDFRAME> plus the overlap.
# Keep CHUNK >= 2 * OVERLAP, and make the last chunk at least 2 * OVERLAP frames (or merge --final handles it).
chunks=$(submit "$NAME render" "$NEURENDER" \
  "render <QUOTE>$PASSES<QUOTE> --out <QUOTE>$FRAMES_DIR<QUOTE> --frames <STARTFRAME>-<ENDFRAME> --overlap $OVERLAP --anchors <QUOTE>$ANCHORS<QUOTE> --progress json $EXTRA" \
  "$FRAMES" "$CHUNK" "$anchors")
merge=$(submit "$NAME merge" "$NEURENDER" "merge <QUOTE>$FRAMES_DIR<QUOTE> --final --progress json" 0 1 "$chunks")
echo "submitted: passes=$passes anchors=$anchors render=$chunks merge=$merge"
