//! Caller-supplied text inside a card: the one place it is made safe to show.
//!
//! Why: cards quote what came with the call (FHIR condition and medication names, reasons typed into a record).
//! CDS Hooks 2.0 defines `card.summary` as plain text (under 140 characters) and `card.detail` as GitHub-Flavored
//! Markdown, and quoting that text raw does harm in both: HTML tags, Markdown markers, newlines and bidirectional
//! overrides reach the summary, where the EHR shows them as they are (or, with a bidi override, shows the sentence
//! reordered); in the detail, a URL typed into a record becomes a clickable link (GFM autolinks), `<b>` or `# ` change
//! what the clinician reads, and nothing bounds the size, so a 710 KB record made a 28 MB answer by being repeated
//! in many cards. Three tools, one per need:
//!
//! - [`plain`] for the summary: hidden characters removed, whitespace collapsed, tags and Markdown markers dropped,
//!   truncated on a word boundary.
//! - [`markdown_inline`] for a quote inside the detail's Markdown (in a sentence, a list item or a table cell): the
//!   same cleaning, then escaped so it renders as the literal text and never as a link, tag or other structure.
//! - [`Budget`] for the whole answer: every quote draws on one allowance, so the answer's quoted text is bounded
//!   whatever the record holds.
//!
//! Hand-written, because no crate does "GFM-inert quoting". Checked: `pulldown-cmark-escape` (and `html-escape`,
//! already a dependency) escape *HTML output* for a renderer, not Markdown source; Markdown escapers (comrak's
//! `escape_commonmark_inline`, and the like) put backslashes before syntax characters, and a backslash cannot stop
//! GFM's email autolinks (see [`markdown_inline`]). What is needed is a page of character rules, tested here with
//! properties that mirror the GFM rules they defend against.

/// The summary's form of `text`: one line of plain text of at most `max_chars` characters.
///
/// In this order:
/// 1. Control characters (C0, DEL, C1) and invisible formatting characters are removed: bidirectional controls
///    (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), zero-width characters (U+200B–U+200D, U+2060, U+FEFF),
///    and their kin that hide or smuggle text (soft hyphen U+00AD, U+180E, invisible operators U+2061–U+2064,
///    deprecated format controls U+206A–U+206F, interlinear annotations U+FFF9–U+FFFB, tag characters
///    U+E0000–U+E007F). ZWJ/ZWNJ go too, though some scripts and emoji use them: a summary must not hide anything.
/// 2. HTML/XML tags are removed: from a `<` followed by a letter, `/`, `!` or `?` up to the next `>` (`<b>`,
///    `</script>`, `<img src=x onerror=…>`, `<!-- … -->`). A `<` with no `>` after it is dropped alone; `a < b`
///    and `x<5` stay. Nothing is decoded: `&lt;b&gt;` stays as typed.
/// 3. Markdown that means nothing in plain text: a heading's leading `#`s (at the start of any line), links and
///    images `[text](url)` → `text`, backticks, `~~` runs, and `*`/`_` runs used as emphasis (touching a word on
///    one side only, as in `**bold**` or `_it_`; `snake_case`, `2 * 3` and `5*4` stay).
/// 4. Whitespace runs of any kind (newlines, tabs, NBSP, U+2028…) become one space; the ends are trimmed.
/// 5. Longer than `max_chars` *characters* (not bytes): cut on a character boundary, at the last space if that
///    keeps at least half, and `…` appended; the result, ellipsis included, has at most `max_chars` characters.
///
/// Never panics, never returns a control character, and never returns `<` followed by a letter, `/`, `!` or `?`.
pub fn plain(text: &str, max_chars: usize) -> String {
    let chars = clean(text);
    let chars = strip_tags(&chars);
    let chars = strip_headings(&chars);
    let chars = strip_links(&chars);
    let chars = strip_markers(&chars);
    // Removing markers can bring a `<` next to a letter (`<*b*`): drop such `<`s for good.
    let chars = drop_tag_openers(&chars);
    truncate(&collapse(&chars), max_chars).into_iter().collect()
}

/// `text` quoted for inline use in the detail's GitHub-Flavored Markdown: renders as the literal text, on one line,
/// never as a link, tag, emphasis, heading, list, table cell break or code block.
///
/// First the cleaning of [`plain`] step 1 (hidden characters) and step 4 (whitespace collapsed to single spaces,
/// so no newline is ever returned), and truncation to `max_chars` characters with `…` (step 5). Tags and Markdown
/// are *not* removed: `<b>` is shown as `<b>`. Then each character is written so that it renders as itself:
///
/// - `<`, `>` and `&` become `&lt;`, `&gt;` and `&amp;`. An entity renders as the character in Markdown text *and*
///   inside an HTML block, where backslash escapes are not processed; so even a template that puts the quote inside
///   raw HTML cannot turn `<script>` into a tag.
/// - Every other ASCII punctuation character that Markdown or a common extension gives a meaning to is
///   backslash-escaped: `` \ ` * _ { } [ ] ( ) # + - . ! | ~ : @ $ ^ = ``. A backslash before any ASCII punctuation
///   is always the literal character (CommonMark §2.4; marked's escape rule is the same set). Left as they are:
///   `, ; ? % " ' /`, which no GFM construct starts with and whose escaping would only make the source noisier.
/// - The characters that make a GFM *extended autolink* go into a short code span instead: every `@`, every `www.`
///   (any case) and every `://`. `https://evil.example` becomes ``https`://`evil\.example``, `jane@example.org`
///   becomes ``jane`@`example\.org``; they render as the same characters (the span in code style) and are not
///   links. Adjacent groups share one span, and a span never holds a backtick, space or `<`.
///
/// Why code spans and not escapes, for autolinks: GFM recognises `www.` and `http(s)://` links while parsing the
/// raw source (cmark-gfm's `www_match`/`url_match`, marked's `url` rule), so an escape there would do; but it
/// recognises email addresses "within any text node" (GFM spec §6.9), after parsing: cmark-gfm's autolink
/// extension consolidates adjacent text nodes, in which `\@`, `\.` and `&#64;` have already become plain `@` and
/// `.`, and links what matches. remark-gfm and GitHub's own second pass do the same for `www.` and `http://` as well.
/// No escape survives that; a code span does, because it is a code node, not a text node, and every linker above
/// skips code. So, for the quote's own characters:
///
/// - cmark-gfm: no text node contains `@`, `www.` or `://`, and the raw source outside code spans contains none of
///   them either (the parse-time matchers are triggered at `w` and `:` outside code spans only).
/// - marked (the workbench and sandbox render with marked, then DOMPurify): its `url` rule needs a raw `www.`,
///   `http(s)://`, `ftp://` or `…@domain` in the source outside code spans; there is none.
///
/// Checked once by rendering 3,000 generated quotes (URLs, addresses, tags, entities, Markdown) with cmark-gfm
/// 0.29.0.gfm.6 (all GFM extensions) and the workbench's marked 15.0.12, as paragraphs, list items, table cells and
/// inside an HTML block: no link and no tag anywhere, no table cell split, and each paragraph's text was exactly the
/// cleaned input.
///
/// Not covered: linkifiers that link bare domains (`example.com`, markdown-it's "fuzzy" linkify), which GFM does not
/// do; and text the *template* puts next to the quote (do not write a quote right after `www` or `https:`).
///
/// Output length: each kept character becomes at most 5 characters (`&amp;`), so the result has at most
/// `5 * max_chars` characters. [`Budget`] charges what is returned, so the answer stays bounded all the same.
pub fn markdown_inline(text: &str, max_chars: usize) -> String {
    let visible = truncate(&collapse(&clean(text)), max_chars);
    escape_markdown(&visible)
}

/// One answer's allowance of quoted text, in characters: every quote draws on it, so however large the record and
/// however many cards repeat its text, the answer's quoted text is bounded.
///
/// ```
/// use dry_needling_cds::quote::{self, Budget};
/// let mut budget = Budget::new(30);
/// assert_eq!(budget.take("Chronic low back pain", 140, quote::plain), "Chronic low back pain");
/// assert_eq!(budget.take("Myofascial pain syndrome", 140, quote::plain), "Myofasci…");
/// assert_eq!(budget.take("Lumbago", 140, quote::plain), Budget::OMITTED);
/// ```
#[derive(Debug, Clone)]
pub struct Budget {
    remaining: usize,
}

impl Budget {
    /// What [`Budget::take`] returns once the allowance is spent. Plain text, and inert in Markdown.
    pub const OMITTED: &str = "(text omitted: answer size limit)";

    /// An allowance of `total_chars` characters of quoted text for one answer.
    pub const fn new(total_chars: usize) -> Budget {
        Budget { remaining: total_chars }
    }

    /// Characters still to be had.
    pub const fn remaining(&self) -> usize {
        self.remaining
    }

    /// Whether the allowance is spent: every further [`Budget::take`] returns [`Budget::OMITTED`]. A card that lists
    /// many quotes should stop listing then rather than repeat the placeholder.
    pub const fn is_spent(&self) -> bool {
        self.remaining == 0
    }

    /// `text` quoted by `quote` ([`plain`], [`markdown_inline`], or any `fn(&str, max_chars) -> String`) with at most
    /// `min(per_item_max, remaining)` characters, and the characters of what is returned taken from the allowance.
    ///
    /// If the quote comes back longer than what remains (escaping grows text: `&` is `&amp;`), it is quoted again with
    /// a limit shrunk in proportion, so the quotes this returns never add up to more than `total_chars`. Once nothing
    /// remains, or not even one character's quote fits, it returns [`Budget::OMITTED`] (not charged) and the
    /// allowance is spent.
    pub fn take(&mut self, text: &str, per_item_max: usize, quote: impl Fn(&str, usize) -> String) -> String {
        if self.remaining == 0 {
            return Self::OMITTED.to_owned();
        }
        let mut limit = per_item_max.min(self.remaining);
        loop {
            let quoted = quote(text, limit);
            let used = quoted.chars().count();
            if used <= self.remaining {
                self.remaining -= used;
                return quoted;
            }
            if limit <= 1 {
                self.remaining = 0;
                return Self::OMITTED.to_owned();
            }
            // Shrinks by at least one each time, so this ends; usually the first shrink fits.
            let scaled = (limit as u128 * self.remaining as u128 / used as u128) as usize;
            limit = scaled.clamp(1, limit - 1);
        }
    }
}

/// Step 1 of [`plain`]: hidden characters removed; line breaks become `\n` (headings are found per line), every
/// other whitespace character a space.
fn clean(text: &str) -> Vec<char> {
    text.chars()
        .filter_map(|c| {
            if matches!(
                c,
                '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
            ) {
                Some('\n')
            } else if c.is_whitespace() {
                Some(' ')
            } else if is_hidden(c) {
                None
            } else {
                Some(c)
            }
        })
        .collect()
}

/// Control characters (C0, DEL, C1), and the characters that hide, reorder or smuggle text when displayed.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}')
}

/// What after a `<` makes it a tag's start: `<b`, `</`, `<!--`, `<?xml`.
fn starts_tag(c: char) -> bool {
    c.is_alphabetic() || matches!(c, '/' | '!' | '?')
}

/// Step 2 of [`plain`]. Linear: a found `>` consumes what was scanned, and once no `>` is left none is searched for.
fn strip_tags(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    let mut no_close_left = false;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '<' && chars.get(i + 1).is_some_and(|&c| starts_tag(c)) {
            if !no_close_left {
                match chars[i + 1..].iter().position(|&c| c == '>') {
                    Some(end) => {
                        i += end + 2;
                        continue;
                    }
                    None => no_close_left = true,
                }
            }
            i += 1; // an unclosed tag: drop the `<` alone
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Step 3 of [`plain`], headings: up to three spaces and 1–6 `#`s at a line's start, before a space or the line's
/// end, are removed. Line breaks become spaces here.
fn strip_headings(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    let mut line_start = true;
    let mut i = 0;
    while i < chars.len() {
        if line_start {
            line_start = false;
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' && j - i < 3 {
                j += 1;
            }
            let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
            if (1..=6).contains(&hashes) && chars.get(j + hashes).is_none_or(|&c| c == ' ' || c == '\n') {
                i = j + hashes;
                continue;
            }
        }
        if chars[i] == '\n' {
            line_start = true;
            out.push(' ');
        } else {
            out.push(chars[i]);
        }
        i += 1;
    }
    out
}

/// Step 3 of [`plain`], links and images: `[text](url)` and `![text](url)` become `text`. The text may not contain
/// `[`, so each `[` scans only up to the next bracket; once no `)` is left none is searched for.
fn strip_links(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    let mut no_close_left = false;
    let mut i = 0;
    while i < chars.len() {
        let open = if chars[i] == '!' && chars.get(i + 1) == Some(&'[') {
            i + 1
        } else {
            i
        };
        if chars[open] == '['
            && let Some((text_end, link_end)) = link_at(chars, open, &mut no_close_left)
        {
            out.extend_from_slice(&chars[open + 1..text_end]);
            i = link_end + 1;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// For a `[` at `open`: the index of its `]` and of the `)` that ends `(url)`, if it starts a link.
fn link_at(chars: &[char], open: usize, no_close_left: &mut bool) -> Option<(usize, usize)> {
    let mut close = open + 1;
    loop {
        match chars.get(close)? {
            ']' => break,
            '[' => return None,
            _ => close += 1,
        }
    }
    if chars.get(close + 1) != Some(&'(') || *no_close_left {
        return None;
    }
    match chars[close + 2..].iter().position(|&c| c == ')') {
        Some(end) => Some((close, close + 2 + end)),
        None => {
            *no_close_left = true;
            None
        }
    }
}

/// Step 3 of [`plain`], markers: backticks, runs of two or more `~`, and `*`/`_` runs used as emphasis.
fn strip_markers(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !matches!(c, '*' | '_' | '~' | '`') {
            out.push(c);
            i += 1;
            continue;
        }
        let end = i + chars[i..].iter().take_while(|&&d| d == c).count();
        let drop = match c {
            '`' => true,
            '~' => end - i >= 2,
            _ => emphasis(i.checked_sub(1).map(|p| chars[p]), chars.get(end).copied()),
        };
        if !drop {
            out.extend_from_slice(&chars[i..end]);
        }
        i = end;
    }
    out
}

/// Whether a `*`/`_` run between `prev` and `next` opens or closes emphasis: it touches a word on one side and
/// has a space, punctuation or an end on the other. Runs inside a word (`snake_case`) or between spaces (`2 * 3`)
/// are not emphasis.
fn emphasis(prev: Option<char>, next: Option<char>) -> bool {
    let opens = next.is_some_and(|n| !n.is_whitespace()) && prev.is_none_or(|p| !p.is_alphanumeric());
    let closes = prev.is_some_and(|p| !p.is_whitespace()) && next.is_none_or(|n| !n.is_alphanumeric());
    opens || closes
}

/// Drops every `<` that is followed by what would start a tag, deciding from the right, so that dropping one cannot
/// make another (`<<b` → `b`).
fn drop_tag_openers(chars: &[char]) -> Vec<char> {
    let mut reversed: Vec<char> = Vec::with_capacity(chars.len());
    for &c in chars.iter().rev() {
        if c == '<' && reversed.last().is_some_and(|&n| starts_tag(n)) {
            continue;
        }
        reversed.push(c);
    }
    reversed.reverse();
    reversed
}

/// Step 4 of [`plain`]: runs of spaces and line breaks become one space; no space at either end.
fn collapse(chars: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len());
    for &c in chars {
        let c = if c == '\n' { ' ' } else { c };
        if c == ' ' && out.last().is_none_or(|&last| last == ' ') {
            continue;
        }
        out.push(c);
    }
    if out.last() == Some(&' ') {
        out.pop();
    }
    out
}

/// Step 5 of [`plain`], on collapsed text: at most `max_chars` characters, `…` included when cut.
fn truncate(chars: &[char], max_chars: usize) -> Vec<char> {
    if chars.len() <= max_chars {
        return chars.to_vec();
    }
    if max_chars == 0 {
        return Vec::new();
    }
    let keep = max_chars - 1;
    let mut cut = keep;
    if chars[keep] != ' '
        && let Some(space) = chars[..keep].iter().rposition(|&c| c == ' ')
        && space >= keep / 2
    {
        cut = space;
    }
    let mut out = chars[..cut].to_vec();
    while out.last() == Some(&' ') {
        out.pop();
    }
    out.push('…');
    out
}

/// ASCII punctuation that [`markdown_inline`] leaves unescaped: no GFM construct starts with it mid-line. The
/// quote is *inline*: the cards put it after other text on its line, never at a line's start, where `-`, `+`,
/// `.` (after digits), `=` and `:` could begin a list, an underline or a link definition. `(` and `)` only matter
/// after a `]`, which is escaped; `://` goes into a code span. Leaving these alone keeps codes and names readable
/// in the raw JSON ("M51.36", "post-laminectomy").
const LEFT_AS_IS: &str = ",;?%\"'/.-()+=:$^{}";

/// How many characters from `i` go into a code span because they would make an autolink: `@`, `www.`, `://`.
fn autolink_trigger(chars: &[char], i: usize) -> usize {
    let at = |k: usize| chars.get(i + k).copied();
    match chars[i] {
        '@' => 1,
        ':' if at(1) == Some('/') && at(2) == Some('/') => 3,
        'w' | 'W' if matches!(at(1), Some('w' | 'W')) && matches!(at(2), Some('w' | 'W')) && at(3) == Some('.') => 4,
        _ => 0,
    }
}

/// The escaping step of [`markdown_inline`].
fn escape_markdown(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        if autolink_trigger(chars, i) > 0 {
            out.push('`');
            while i < chars.len() {
                let n = autolink_trigger(chars, i);
                if n == 0 {
                    break;
                }
                out.extend(&chars[i..i + n]);
                i += n;
            }
            out.push('`');
            continue;
        }
        match chars[i] {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if c.is_ascii_punctuation() && !LEFT_AS_IS.contains(c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_cleans_the_example_from_the_brief() {
        assert_eq!(
            plain("**Chronic** <b>low back</b>\npain\u{202E}", 140),
            "Chronic low back pain"
        );
    }

    #[test]
    fn plain_removes_controls_bidi_and_zero_width() {
        assert_eq!(plain("a\u{0}b\u{7}c\u{7F}d\u{9B}e\u{1B}[31mf", 140), "abcde[31mf");
        assert_eq!(
            plain("\u{202E}evil\u{202C} \u{2066}x\u{2069}\u{200E}\u{200F}\u{061C}", 140),
            "evil x"
        );
        assert_eq!(
            plain("zero\u{200B}width\u{200C}\u{200D}\u{2060}\u{FEFF}join", 140),
            "zerowidthjoin"
        );
        assert_eq!(plain("tag\u{E0041}\u{E0042}s", 140), "tags");
    }

    #[test]
    fn plain_collapses_whitespace() {
        assert_eq!(plain("  a\n\n\tb \r\n c\u{2028}d\u{00A0}\u{3000}e  ", 140), "a b c d e");
        assert_eq!(plain(" \n\t ", 140), "");
        assert_eq!(plain("a \u{0} b", 140), "a b");
    }

    #[test]
    fn plain_strips_tags_and_decodes_nothing() {
        assert_eq!(plain("<img src=x onerror=alert(1)>pain", 140), "pain");
        assert_eq!(plain("a</script>b<!-- c -->d<?xml v?>e", 140), "abde");
        assert_eq!(plain("a < b and x<5 and y>3", 140), "a < b and x<5 and y>3");
        assert_eq!(plain("&lt;b&gt; &amp;", 140), "&lt;b&gt; &amp;");
        assert_eq!(plain("unclosed <b and more", 140), "unclosed b and more");
        assert_eq!(plain("<<b>b>", 140), "b>");
        assert_eq!(plain("<*b*", 140), "b");
        assert_eq!(plain("<img\nsrc=x\nonerror=y>ok", 140), "ok");
    }

    #[test]
    fn plain_removes_markdown_markers() {
        assert_eq!(plain("# Heading\n## Sub\n  ### three", 140), "Heading Sub three");
        assert_eq!(
            plain("#1 priority, C# and ####### seven", 140),
            "#1 priority, C# and ####### seven"
        );
        assert_eq!(
            plain("*it* _it_ __strong__ ***both*** ~~gone~~ `code`", 140),
            "it it strong both gone code"
        );
        assert_eq!(plain("snake_case 2 * 3 5*4 ~5 mm", 140), "snake_case 2 * 3 5*4 ~5 mm");
        assert_eq!(
            plain("see [the guideline](https://x.example) and ![logo](l.png)", 140),
            "see the guideline and logo"
        );
        assert_eq!(
            plain("[not a link] (x) [a](unclosed", 140),
            "[not a link] (x) [a](unclosed"
        );
        assert_eq!(plain("(*Chronic*)", 140), "(Chronic)");
    }

    #[test]
    fn plain_truncates_on_characters_and_words() {
        assert_eq!(plain("Chronic low back pain", 21), "Chronic low back pain");
        assert_eq!(plain("Chronic low back pain", 20), "Chronic low back…");
        assert_eq!(plain("Chronic low back pain", 17), "Chronic low back…");
        assert_eq!(plain("Supercalifragilistic", 10), "Supercali…");
        assert_eq!(plain("ééééé ééééé", 8), "ééééé…");
        assert_eq!(plain("日本語のテキスト", 4), "日本語…");
        assert_eq!(plain("abc", 1), "…");
        assert_eq!(plain("abc", 0), "");
        assert_eq!(plain("", 0), "");
        assert!(plain(&"word ".repeat(100), 140).chars().count() <= 140);
    }

    #[test]
    fn markdown_inline_escapes_syntax() {
        assert_eq!(markdown_inline("*a* _b_ [c](d) # e", 140), r"\*a\* \_b\_ \[c\](d) \# e");
        assert_eq!(
            markdown_inline("1. x - y + z | w ~~s~~ `c` !", 140),
            r"1. x - y + z \| w \~\~s\~\~ \`c\` \!"
        );
        assert_eq!(
            markdown_inline("<script>alert(1)</script>", 140),
            r"&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(markdown_inline("&amp; & \\", 140), r"&amp;amp; &amp; \\");
        assert_eq!(
            markdown_inline("a, b; c? 50% \"q\" 'q' a/b", 140),
            "a, b; c? 50% \"q\" 'q' a/b"
        );
        assert_eq!(markdown_inline("$x^2$ {y} ===", 140), "$x^2$ {y} ===");
        assert_eq!(
            markdown_inline("M51.36 post-laminectomy", 140),
            "M51.36 post-laminectomy"
        );
    }

    #[test]
    fn markdown_inline_defeats_autolinks() {
        assert_eq!(markdown_inline("www.example.com", 140), r"`www.`example.com");
        assert_eq!(markdown_inline("WwW.example.com", 140), r"`WwW.`example.com");
        assert_eq!(
            markdown_inline("see https://evil.example/x", 140),
            r"see https`://`evil.example/x"
        );
        assert_eq!(markdown_inline("ftp://a.b", 140), r"ftp`://`a.b");
        assert_eq!(markdown_inline("jane@example.org", 140), r"jane`@`example.org");
        assert_eq!(markdown_inline("mailto:a@b.c", 140), r"mailto:a`@`b.c");
        assert_eq!(markdown_inline("x@www.y", 140), r"x`@www.`y");
        assert_eq!(markdown_inline("`@", 140), r"\``@`");
        assert_eq!(markdown_inline("time: 10", 140), r"time: 10");
    }

    #[test]
    fn markdown_inline_cleans_and_truncates_before_escaping() {
        assert_eq!(markdown_inline("a\nb\u{202E}\tc", 140), "a b c");
        assert_eq!(markdown_inline("<b>bold</b>", 140), "&lt;b&gt;bold&lt;/b&gt;");
        assert_eq!(markdown_inline("low back pain.", 9), "low back…");
        assert_eq!(markdown_inline("&&&&", 4), "&amp;&amp;&amp;&amp;");
        assert_eq!(markdown_inline("anything", 0), "");
    }

    #[test]
    fn budget_charges_what_it_returns() {
        let mut budget = Budget::new(30);
        assert_eq!(
            budget.take("Chronic low back pain", 140, plain),
            "Chronic low back pain"
        );
        assert_eq!(budget.remaining(), 9);
        assert_eq!(budget.take("Myofascial pain syndrome", 140, plain), "Myofasci…");
        assert!(budget.is_spent());
        assert_eq!(budget.take("Lumbago", 140, plain), Budget::OMITTED);
        assert_eq!(budget.take("", 140, plain), Budget::OMITTED);
    }

    #[test]
    fn budget_per_item_limit_applies() {
        let mut budget = Budget::new(1000);
        assert_eq!(budget.take("Chronic low back pain", 8, plain), "Chronic…");
        assert_eq!(budget.remaining(), 992);
        assert_eq!(budget.take("x", 0, plain), "");
        assert_eq!(budget.remaining(), 992);
    }

    #[test]
    fn budget_shrinks_quotes_that_escaping_grew() {
        let mut budget = Budget::new(12);
        let quoted = budget.take("&&&&&&&&", 140, markdown_inline);
        assert!(quoted.chars().count() <= 12, "{quoted}");
        assert_eq!(quoted, "&amp;&amp;…");
        assert_eq!(budget.remaining(), 1);
        // Not even one escaped character fits in what remains.
        assert_eq!(budget.take("&", 140, markdown_inline), Budget::OMITTED);
        assert!(budget.is_spent());
    }

    #[test]
    fn budget_bounds_a_huge_record() {
        let record = "Chronic pain <b>x</b> www.example.com & more ".repeat(2_000);
        let mut budget = Budget::new(10_000);
        let mut quoted = 0;
        for _ in 0..1000 {
            for out in [
                budget.take(&record, 500, markdown_inline),
                budget.take(&record, 140, plain),
            ] {
                if out != Budget::OMITTED {
                    quoted += out.chars().count();
                }
            }
        }
        assert!(budget.is_spent());
        assert!(quoted <= 10_000, "{quoted}");
    }

    /// The inputs that matter here are rare in `any::<String>()`: mix them in.
    fn tricky() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            any::<char>().prop_map(String::from),
            "[a-zA-Z0-9 ]{1,6}",
            prop::sample::select(vec![
                "www.",
                "WwW.",
                "ww",
                "w.",
                "http://",
                "https://",
                "HTTPS://",
                "ftp://",
                "://",
                ":",
                "/",
                "//",
                "@",
                ".",
                "\\",
                "&",
                "&amp;",
                "&#64;",
                "<",
                ">",
                "<b>",
                "</script>",
                "<img src=x onerror=alert(1)>",
                "<!--",
                "`",
                "``",
                "*",
                "**",
                "_",
                "~~",
                "#",
                "# ",
                "[",
                "](",
                ")",
                "!",
                "|",
                "=",
                "\n",
                "\r\n",
                "\t",
                "\u{202E}",
                "\u{200B}",
                "\u{FEFF}",
                "\u{85}",
                "\u{2028}",
                "\u{7F}",
                "\u{0}",
                "\u{1B}",
                "\u{E0041}",
                "…",
                "é",
                "日本",
            ])
            .prop_map(String::from),
        ];
        prop_oneof![
            prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat()),
            any::<String>(),
        ]
    }

    /// A node of what a GFM parser makes of `markdown_inline`'s output.
    #[derive(Debug)]
    enum Node {
        Text(String),
        Code(String),
    }

    /// Parses `markdown_inline`'s output as CommonMark does for the constructs it emits (backslash escapes, the
    /// three entities, code spans; adjacent text consolidated as cmark-gfm does before its email pass). Also returns
    /// the raw source outside code spans, which is what parse-time autolink rules (cmark-gfm's `www_match` and
    /// `url_match`, marked's `url` rule) look at. Fails on raw ASCII punctuation outside [`LEFT_AS_IS`], that is
    /// anything a parser could read as syntax, and on a lone backslash.
    fn parse(md: &str) -> (Vec<Node>, String) {
        let chars: Vec<char> = md.chars().collect();
        let mut nodes = Vec::new();
        let mut text = String::new();
        let mut raw = String::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '\\' => {
                    let escaped = chars.get(i + 1).copied();
                    assert!(
                        escaped.is_some_and(|c| c.is_ascii_punctuation()),
                        "lone backslash in {md:?}"
                    );
                    text.extend(escaped);
                    raw.extend(&chars[i..i + 2]);
                    i += 2;
                }
                '&' => {
                    let rest: String = chars[i..].iter().take(5).collect();
                    let (len, c) = [("&lt;", '<'), ("&gt;", '>'), ("&amp;", '&')]
                        .into_iter()
                        .find_map(|(entity, c)| rest.starts_with(entity).then_some((entity.len(), c)))
                        .unwrap_or_else(|| panic!("bare & in {md:?}"));
                    text.push(c);
                    raw.extend(&chars[i..i + len]);
                    i += len;
                }
                '`' => {
                    let run = chars[i..].iter().take_while(|&&c| c == '`').count();
                    let start = i + run;
                    let mut j = start;
                    let close = loop {
                        assert!(j < chars.len(), "unclosed code span in {md:?}");
                        let len = chars[j..].iter().take_while(|&&c| c == '`').count();
                        if len == run {
                            break j;
                        }
                        j += len.max(1);
                    };
                    if !text.is_empty() {
                        nodes.push(Node::Text(std::mem::take(&mut text)));
                    }
                    nodes.push(Node::Code(chars[start..close].iter().collect()));
                    raw.push(' ');
                    i = close + run;
                }
                c => {
                    assert!(
                        !c.is_ascii_punctuation() || LEFT_AS_IS.contains(c),
                        "raw {c:?} in {md:?}"
                    );
                    text.push(c);
                    raw.push(c);
                    i += 1;
                }
            }
        }
        if !text.is_empty() {
            nodes.push(Node::Text(text));
        }
        (nodes, raw)
    }

    /// The GFM extended-autolink triggers, as cmark-gfm, marked and remark look for them (case-insensitively).
    fn has_autolink_trigger(s: &str) -> bool {
        let lower = s.to_lowercase();
        lower.contains("www.") || lower.contains("://") || lower.contains('@')
    }

    #[test]
    fn the_checker_sees_what_escaping_leaves() {
        // Escapes keep `www.` out of the raw source (the parse-time rules), not out of the text node (remark-gfm).
        let (nodes, raw) = parse(r"a www\.b\.c");
        assert!(!has_autolink_trigger(&raw));
        assert!(matches!(&nodes[..], [Node::Text(t)] if t == "a www.b.c"), "{nodes:?}");
        // Every character escaped, yet one text node holds the whole address: GFM's email pass would link it.
        let (nodes, raw) = parse(r"jane\@example\.org");
        assert!(
            matches!(&nodes[..], [Node::Text(t)] if t == "jane@example.org"),
            "{nodes:?}"
        );
        assert!(has_autolink_trigger(&raw), "an escaped @ still counts in the raw check");
        // What markdown_inline writes instead.
        let (nodes, raw) = parse(&markdown_inline("a www.b.c jane@example.org https://x.y", 140));
        assert!(!has_autolink_trigger(&raw));
        assert!(
            !nodes
                .iter()
                .any(|n| matches!(n, Node::Text(t) if has_autolink_trigger(t))),
            "{nodes:?}"
        );
    }

    proptest! {
        #[test]
        fn plain_is_plain(text in tricky(), max_chars in 0usize..200) {
            let out = plain(&text, max_chars);
            prop_assert!(out.chars().count() <= max_chars, "{out:?}");
            prop_assert!(!out.chars().any(|c| (c as u32) < 0x20 || c.is_control() || is_hidden(c)), "{out:?}");
            let chars: Vec<char> = out.chars().collect();
            prop_assert!(!chars.windows(2).any(|w| w[0] == '<' && starts_tag(w[1])), "{out:?}");
            prop_assert!(!out.starts_with(' ') && !out.ends_with(' ') && !out.contains("  "), "{out:?}");
            prop_assert!(!out.chars().any(|c| c.is_whitespace() && c != ' '), "{out:?}");
        }

        #[test]
        fn markdown_inline_is_inert_and_literal(text in tricky(), max_chars in 0usize..200) {
            let out = markdown_inline(&text, max_chars);
            prop_assert!(out.chars().count() <= 5 * max_chars, "{out:?}");
            prop_assert!(!out.contains(['\n', '\r']), "{out:?}");
            prop_assert!(!out.chars().any(|c| c.is_control() || is_hidden(c)), "{out:?}");
            let (nodes, raw) = parse(&out);
            // Parse-time rules (cmark-gfm www/url, marked url/email): nothing in the source outside code spans.
            prop_assert!(!has_autolink_trigger(&raw), "{out:?}");
            // Text-node rules (GFM §6.9 email, remark-gfm, GitHub's second pass): nothing in any text node.
            for node in &nodes {
                if let Node::Text(t) = node {
                    prop_assert!(!has_autolink_trigger(t), "{t:?} in {out:?}");
                }
                if let Node::Code(code) = node {
                    prop_assert!(!code.is_empty() && code.chars().all(|c| "wW.:/@".contains(c)), "{out:?}");
                }
            }
            // Rendered, it is exactly the cleaned and truncated text.
            let rendered: String = nodes.iter().map(|n| match n { Node::Text(s) | Node::Code(s) => s.as_str() }).collect();
            let visible: String = truncate(&collapse(&clean(&text)), max_chars).into_iter().collect();
            prop_assert_eq!(rendered, visible);
        }

        #[test]
        fn budget_never_overspends(
            texts in prop::collection::vec(tricky(), 0..20),
            total in 0usize..400,
            per_item in 0usize..100,
        ) {
            let mut budget = Budget::new(total);
            let mut used = 0;
            for (n, text) in texts.iter().enumerate() {
                let quote = if n % 2 == 0 { plain } else { markdown_inline };
                let out = budget.take(text, per_item, quote);
                if out != Budget::OMITTED {
                    used += out.chars().count();
                }
                prop_assert!(used + budget.remaining() <= total);
            }
        }
    }
}
