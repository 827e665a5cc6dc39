# Sourced by the bench scripts: one bar chart, a PNG drawn by gnuplot, from a table file.
#
#   bar_chart PNG TITLE DATA
#
# DATA is whitespace-separated: a header line (a name for the row labels, then one name
# per series), then one row per group of bars: its label, then one value per series
# ("-": no value). One series: one bar per row, no key; several: each row's bars side by
# side, one colour per series, with a key. Every bar is labelled with its value.
# Needs gnuplot (apt-get install gnuplot-nox).
bar_chart() {
  local png=$1 title=$2 data=$3 n gap key width
  command -v gnuplot >/dev/null || { echo "bar_chart: needs gnuplot (apt-get install gnuplot-nox)" >&2; return 1; }
  n=$(awk 'NR == 1 { print NF - 1; exit }' "$data")
  [ "${n:-0}" -ge 1 ] || { echo "bar_chart: $data has no series in its header line" >&2; return 1; }
  # Wide enough for the labels: 120 pixels a bar (40 a bar and 40 a gap when grouped), at least 640.
  width=$(awk -v n="$n" 'END { w = (NR - 1) * (n > 1 ? 40 * n + 40 : 120) + 120; print (w < 640 ? 640 : w) }' "$data")
  if [ "$n" -eq 1 ]; then gap=2 key="unset key"; else gap=1 key="set key below horizontal"; fi
  gnuplot <<GP
set terminal pngcairo size $width,$((n > 1 ? 440 : 400)) noenhanced
set output "$png"
set title "$title"
set style data histograms
set style histogram clustered gap $gap
set style fill solid 0.8 border -1
set boxwidth 0.7
set yrange [0:*]
set offsets 0, 0, graph 0.15, 0
set grid ytics
set datafile missing "-"
set key autotitle columnheader
$key
colours = "#3b6ea8 #d08a2e #5a9e4b #a8413b #7b5aa6 #5c5c5c"
plot for [i=2:$((n + 1))] "$data" using i:xtic(1) lc rgb word(colours, (i - 2) % 6 + 1), \\
  for [i=2:$((n + 1))] "" using (\$0 + (i - 2 - ($n - 1) / 2.0) / ($n + $gap.0)):i:(sprintf("%.2f", column(i))) \\
    with labels offset 0,0.7 font ",$((n > 1 ? 8 : 10))" notitle
GP
}
