// Replies drawn from their Markdown. markdown-it (vendored: markdown-it.min.js, MIT, see
// markdown-it.LICENSE.txt) parses the text into tokens, with HTML in the source left as text
// (html: false); each token becomes an element built here from a fixed list of tags, its text
// a text node. No string is ever parsed as HTML, and a link keeps only an http(s) or mailto
// address: what a reply says cannot become markup, script or a request of the page's own.

import { h } from "./dom.js";

/** The elements a token may open, by markdown-it's tag name. */
const TAGS = new Set([
  "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "strong", "em", "s",
  "table", "thead", "tbody", "tr", "th", "td", "a",
]);
const SAFE_LINK = /^(https?:|mailto:)/i;

let parser = null;

/** markdown-it, made once (null when its script did not load: replies stay plain text). */
function markdownIt() {
  if (parser === null && typeof window.markdownit === "function") {
    parser = window.markdownit({ html: false, linkify: true, typographer: false });
  }
  return parser;
}

/** Tell whether Markdown can be drawn here. */
export function available() {
  return markdownIt() !== null;
}

/** The element a token opens, with the attributes it may keep. */
function opened(token) {
  if (!TAGS.has(token.tag)) return h("span");
  if (token.tag === "a") {
    const href = token.attrGet("href") || "";
    if (!SAFE_LINK.test(href)) return h("span", { class: "md-link-refused", title: href });
    return h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow" });
  }
  if (token.tag === "ol" && token.attrGet("start")) {
    return h("ol", { start: Number.parseInt(token.attrGet("start"), 10) || 1 });
  }
  const align = /text-align:(left|right|center)/.exec(token.attrGet("style") || "");
  return h(token.tag, align ? { class: `md-${align[1]}` } : {});
}

/** Append the elements of ``tokens`` to ``parent``. */
function build(parent, tokens) {
  const stack = [parent];
  for (const token of tokens) {
    const top = stack[stack.length - 1];
    if (token.nesting === 1) {
      // (a tight list's paragraphs are hidden: their text goes in the item itself)
      const el = token.hidden ? top : top.appendChild(opened(token));
      stack.push(el);
    } else if (token.nesting === -1) {
      if (stack.length > 1) stack.pop();
    } else if (token.type === "inline") {
      build(top, token.children || []);
    } else if (token.type === "fence" || token.type === "code_block") {
      const lang = (token.info || "").trim().split(/\s+/)[0];
      top.append(h("pre", { class: "md-code" }, h("code", { dataset: lang ? { lang } : {} }, token.content)));
    } else if (token.type === "code_inline") {
      top.append(h("code", {}, token.content));
    } else if (token.type === "softbreak") {
      top.append("\n");
    } else if (token.type === "hardbreak") {
      top.append(h("br"));
    } else if (token.type === "hr") {
      top.append(h("hr"));
    } else if (token.type === "image") {
      top.append(token.content || token.attrGet("src") || ""); // its words, never a request
    } else if (token.content) {
      top.append(token.content); // text (and the source's own HTML, as text)
    }
  }
}

/** ``text`` drawn from its Markdown, as a fragment of elements and text nodes. */
export function markdown(text) {
  const fragment = document.createDocumentFragment();
  build(fragment, markdownIt().parse(text, {}));
  return fragment;
}
