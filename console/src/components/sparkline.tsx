// An SVG sparkline: the recent history of one number, scaled to its own maximum.
export function Sparkline({
  values,
  width = 160,
  height = 36,
  label,
  tone = "info",
}: {
  values: number[];
  width?: number;
  height?: number;
  label: string;
  tone?: "info" | "bad" | "ok" | "warn";
}) {
  const pad = 2;
  const max = Math.max(1e-9, ...values);
  const n = values.length;
  const x = (i: number) => (n <= 1 ? width - pad : pad + (i * (width - 2 * pad)) / (n - 1));
  const y = (v: number) => height - pad - (v / max) * (height - 2 * pad);
  const line = values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const area = n ? `${line} L${x(n - 1).toFixed(1)},${height - pad} L${x(0).toFixed(1)},${height - pad} Z` : "";
  return (
    <svg class={`sparkline ${tone}`} width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={label}>
      {n > 0 && <path class="area" d={area} />}
      {n > 0 && <path class="line" d={line} />}
      {n === 0 && <line class="baseline" x1={pad} x2={width - pad} y1={height - pad} y2={height - pad} />}
    </svg>
  );
}
