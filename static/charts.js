// Simple bar charts of the hub's hourly stats (stats.get), drawn as SVG
// elements (no library, no inline style: CSP allows neither).

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) el.append(child);
  return el;
}

// One small chart: a bar per hour, the total in the title.
export function barChart(title, series, key, className) {
  const values = series.map((s) => s[key] ?? 0);
  const max = Math.max(1, ...values);
  const width = 240;
  const height = 56;
  const step = width / Math.max(1, values.length);
  const total = values.reduce((a, b) => a + b, 0);
  const bars = values.map((v, i) => {
    const barHeight = Math.round((v / max) * (height - 4));
    return svg(
      "rect",
      { x: (i * step + 1).toFixed(1), y: height - barHeight, width: Math.max(1, step - 2).toFixed(1),
        height: barHeight, class: "bar" },
      svg("title", {}, `${new Date(series[i].hour).toLocaleString()}: ${v}`),
    );
  });
  const figure = document.createElement("figure");
  figure.className = `chart ${className}`;
  figure.dataset.total = String(total);
  const caption = document.createElement("figcaption");
  caption.textContent = `${title}: ${total}`;
  figure.append(
    caption,
    svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title} per hour` },
      svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }),
      ...bars),
  );
  return figure;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
