// A small, safe Markdown renderer for escalations and policies.
//
// It never parses HTML: the source is split into blocks and inline runs,
// and every piece of text becomes a DOM text node. Only these elements are
// ever made: p, h3-h5, ul, ol, li, pre, code, blockquote, strong, em, a,
// br, hr. Links keep only http(s) and mailto targets and open with
// rel="noopener noreferrer"; anything else stays text. So no input can
// produce a script, an event handler, a style or a javascript: URL.

const SAFE_HREF = /^(https?:|mailto:)/i;

function el(tag, ...children) {
  const node = document.createElement(tag);
  for (const child of children) node.append(child);
  return node;
}

// Inline: `code`, **strong**, *em* / _em_, [text](url), bare https:// links.
const INLINE =
  /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*|_[^_\n]+_)|(\[[^\]\n]+\]\([^)\s]+\))|(https?:\/\/[^\s<>)]+)/;

function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m) {
      out.push(document.createTextNode(rest));
      break;
    }
    if (m.index) out.push(document.createTextNode(rest.slice(0, m.index)));
    const [token] = m;
    if (m[1]) out.push(el("code", token.slice(1, -1)));
    else if (m[2]) out.push(el("strong", ...inline(token.slice(2, -2))));
    else if (m[3]) out.push(el("em", ...inline(token.slice(1, -1))));
    else if (m[4]) {
      const split = token.indexOf("](");
      out.push(link(token.slice(1, split), token.slice(split + 2, -1)));
    } else out.push(link(token, token));
    rest = rest.slice(m.index + token.length);
  }
  return out;
}

function link(text, href) {
  if (!SAFE_HREF.test(href)) return document.createTextNode(text);
  const a = el("a", ...inline(text));
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  return a;
}

function paragraph(lines) {
  const p = el("p");
  lines.forEach((line, i) => {
    if (i) p.append(el("br"));
    p.append(...inline(line));
  });
  return p;
}

// Blocks: ``` fences, # headings, - / * / 1. lists, > quotes, --- rules,
// blank-line separated paragraphs.
export function renderMarkdown(source) {
  const root = el("div");
  root.className = "md";
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^```/.test(line)) {
      const body = [];
      i += 1;
      while (i < lines.length && !/^```/.test(lines[i])) body.push(lines[i++]);
      i += 1;
      root.append(el("pre", el("code", body.join("\n"))));
      continue;
    }
    const heading = /^(#{1,3})\s+(.*)$/.exec(line);
    if (heading) {
      root.append(el(`h${heading[1].length + 2}`, ...inline(heading[2])));
      i += 1;
      continue;
    }
    if (/^\s*(-{3,}|\*{3,})\s*$/.test(line)) {
      root.append(el("hr"));
      i += 1;
      continue;
    }
    const bullet = /^\s*([-*+]|\d+[.)])\s+/;
    if (bullet.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length && bullet.test(lines[i])) {
        list.append(el("li", ...inline(lines[i].replace(bullet, ""))));
        i += 1;
      }
      root.append(list);
      continue;
    }
    if (/^>\s?/.test(line)) {
      const quoted = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) quoted.push(lines[i++].replace(/^>\s?/, ""));
      root.append(el("blockquote", renderMarkdown(quoted.join("\n"))));
      continue;
    }
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const para = [];
    while (
      i < lines.length &&
      lines[i].trim() &&
      !/^(```|#{1,3}\s|>)/.test(lines[i]) &&
      !bullet.test(lines[i])
    ) {
      para.push(lines[i++]);
    }
    root.append(paragraph(para));
  }
  return root;
}
