//! Query expansion: the stop words of EN, ES, PT and AR, the particles of ZH, JA and KO,
//! and [`keywords`], which turns one query word into the keywords search looks for.
//!
//! There is no language detection: a word is dropped when it is a stop word of any
//! language (compared with Latin diacritics and Arabic hamza, alef and harakat variants
//! folded, so `esta` and `está`, `الى` and `إلى` are one word), and
//! [`super::search::query_terms`] keeps the query as it is when that would drop every word.
//! Words that are stop words in one language but content words in English or in technical
//! notes are left out of the lists on purpose: ES/PT `son`, `sin`, `era`, `sea`, `solo`,
//! `todo(s)`, `os`, `su` (also a Unix command), PT `eu`.
//!
//! Chinese and Japanese have no spaces, so a run of Han or kana is one word to the
//! tokenizer: it is cut at its particles and function words (greedy, longest first; a run
//! holding kana takes the Japanese list, one without takes the Chinese list), keeping the
//! pieces between them. A short list of common words that merely contain a particle
//! character (现在, 目的, 了解, 現在, …) is kept whole. Korean writes particles as suffixes
//! of the word (eojeol): the longest particle suffix is stripped when something is left.
//! The pieces go to the trigram index or, below three characters, to a substring scan, so a
//! piece cut too short still matches the text it came from.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::OnceLock;

use super::search::is_cjk;

/// A language's stop words and particles for query expansion. Add a language by adding a
/// row to [`LANGUAGES`].
#[derive(Debug)]
pub struct Language {
    /// ISO 639-1 code.
    pub code: &'static str,
    /// Lower-case stop words, dropped when they are a whole query word.
    pub stop_words: &'static [&'static str],
    /// Particles and function words cut out of a run of CJK text (ZH, JA).
    pub particles: &'static [&'static str],
    /// Particles stripped from the end of a word (KO).
    pub suffixes: &'static [&'static str],
}

/// English.
#[rustfmt::skip]
pub const EN_STOP: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "no",
    "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out",
    "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your", "yours", "did", "does", "tell",
    "remember", "recall", "know", "please", "s", "t", "don", "doesn", "didn", "isn", "aren", "wasn",
];

/// Spanish (written with accents; unaccented spellings match too).
#[rustfmt::skip]
pub const ES_STOP: &[&str] = &[
    "a", "al", "algo", "alguna", "algunas", "alguno", "algunos", "ante", "antes", "aquel",
    "aquella", "aquellas", "aquellos", "aquí", "así", "aún", "aunque", "bajo", "bien", "cada",
    "casi", "como", "cómo", "con", "contra", "cual", "cuál", "cuales", "cuáles", "cuando", "cuándo",
    "cuanto", "cuánto", "de", "del", "demás", "desde", "después", "donde", "dónde", "durante", "e",
    "el", "él", "ella", "ellas", "ello", "ellos", "en", "entonces", "entre", "eran", "eres", "es",
    "esa", "esas", "ese", "eso", "esos", "esta", "está", "estaba", "estaban", "estado", "estamos",
    "están", "estar", "estas", "estás", "este", "esto", "estos", "estoy", "fue", "fueron", "fui",
    "ha", "había", "habían", "haber", "hace", "hacia", "han", "has", "hasta", "hay", "he", "hemos",
    "la", "las", "le", "les", "lo", "los", "mas", "más", "me", "mi", "mí", "mientras", "mis",
    "misma", "mismas", "mismo", "mismos", "mucha", "muchas", "mucho", "muchos", "muy", "nada", "ni",
    "ninguna", "ninguno", "no", "nos", "nosotras", "nosotros", "nuestra", "nuestras", "nuestro",
    "nuestros", "o", "otra", "otras", "otro", "otros", "para", "pero", "poco", "por", "porque",
    "pues", "puede", "pueden", "puedo", "qué", "que", "quien", "quién", "quienes", "se", "según",
    "ser", "si", "sí", "siempre", "sido", "sino", "sobre", "somos", "soy", "sus", "suya", "suyas",
    "suyo", "suyos", "también", "tan", "tanto", "te", "tener", "tengo", "ti", "tiene", "tienen",
    "toda", "todas", "tras", "tu", "tú", "tus", "tuya", "tuyo", "un", "una", "unas", "uno", "unos",
    "usted", "ustedes", "vez", "y", "ya", "yo",
];

/// Portuguese.
#[rustfmt::skip]
pub const PT_STOP: &[&str] = &[
    "a", "à", "ao", "aos", "apenas", "após", "aquela", "aquelas", "aquele", "aqueles", "aquilo",
    "aqui", "as", "às", "assim", "até", "cada", "com", "como", "contra", "da", "das", "de", "dela",
    "delas", "dele", "deles", "depois", "desde", "do", "dos", "e", "é", "ela", "elas", "ele",
    "eles", "em", "enquanto", "entre", "entretanto", "essa", "essas", "esse", "esses", "esta",
    "está", "estamos", "estão", "estar", "estas", "estava", "estavam", "este", "estes", "estou",
    "foi", "foram", "fosse", "há", "havia", "isso", "isto", "já", "lá", "lhe", "lhes", "mais",
    "mas", "me", "mesma", "mesmo", "meu", "meus", "minha", "minhas", "muita", "muitas", "muito",
    "muitos", "na", "não", "nas", "nem", "nessa", "nesse", "nesta", "neste", "no", "nos", "nós",
    "nossa", "nossas", "nosso", "nossos", "num", "numa", "o", "onde", "ou", "outra", "outras",
    "outro", "outros", "para", "pela", "pelas", "pelo", "pelos", "per", "pode", "podem", "por",
    "porque", "porém", "pra", "qual", "quais", "quando", "quanto", "que", "quê", "quem", "se",
    "seja", "sejam", "sem", "ser", "seu", "seus", "sido", "só", "sob", "sobre", "somos", "sou",
    "sua", "suas", "são", "também", "tem", "têm", "ter", "teu", "teus", "tinha", "tinham", "tu",
    "tua", "tuas", "um", "uma", "umas", "uns", "vai", "vão", "você", "vocês", "vos", "vou",
];

/// Arabic (hamza and alef variants, alef maqsura and harakat are folded when compared).
#[rustfmt::skip]
pub const AR_STOP: &[&str] = &[
    "في", "من", "إلى", "على", "عن", "مع", "هذا", "هذه", "ذلك", "تلك", "هؤلاء", "أولئك", "هذان",
    "هاتان", "التي", "الذي", "الذين", "اللذان", "اللتان", "اللواتي", "اللاتي", "ما", "ماذا", "متى",
    "أين", "كيف", "لماذا", "هل", "كم", "أي", "لا", "لم", "لن", "ليس", "ليست", "قد", "لقد", "ثم",
    "أو", "أم", "و", "ف", "ب", "ل", "ك", "إن", "أن", "كان", "كانت", "كانوا", "يكون", "تكون", "كل",
    "بعض", "غير", "بين", "عند", "عندما", "حتى", "منذ", "لكن", "بل", "إذا", "إذ", "لو", "كما", "مثل",
    "أيضا", "فقط", "جدا", "هو", "هي", "هم", "هن", "هما", "أنا", "نحن", "أنت", "أنتم", "أنتن", "له",
    "لها", "لهم", "لهن", "لي", "لك", "لنا", "به", "بها", "بهم", "فيه", "فيها", "فيهم", "منه",
    "منها", "منهم", "عليه", "عليها", "عليهم", "إليه", "إليها", "عنه", "عنها", "هنا", "هناك", "الآن",
    "قبل", "بعد", "فوق", "تحت", "أمام", "خلف", "حول", "دون", "خلال", "عبر", "نحو", "لدى", "سوف",
    "إلا", "نعم", "أما", "إما", "حيث", "بينما", "لأن", "كي", "لكي", "وهو", "وهي", "وفي", "ومن",
    "وعلى", "وما", "ولا", "فإن", "فقد", "وقد", "ولم", "وأن", "أكثر", "أقل", "ذات", "ذو", "يا",
    "أيها", "التى", "الى", "تم", "ضمن", "عدة", "كلا", "يمكن",
];

/// Chinese function words and particles (greedy, longest first).
#[rustfmt::skip]
pub const ZH_PARTICLES: &[&str] = &[
    "我们", "你们", "他们", "她们", "它们", "这个", "那个", "这些", "那些", "什么", "怎么", "怎样", "为什么", "哪里", "哪个", "因为",
    "所以", "但是", "可是", "还是", "或者", "如果", "虽然", "然后", "已经", "就是", "不是", "这样", "那样", "以及", "关于", "对于",
    "由于", "而且", "并且", "的", "了", "是", "在", "和", "与", "及", "或", "也", "都", "吗", "呢", "吧", "啊", "着",
    "把", "被", "这", "那", "我", "你", "他", "她", "它", "很", "就", "之",
];

/// Common Chinese words that contain a particle character and are kept whole.
#[rustfmt::skip]
const ZH_KEEP: &[&str] = &[
    "现在", "存在", "正在", "实在", "目的", "了解", "首都", "参与", "和平", "总和", "普及", "及时", "把握", "成就", "其他", "他人",
    "的确", "被子", "显著",
];

/// Japanese particles, copulas and function words (greedy, longest first).
#[rustfmt::skip]
pub const JA_PARTICLES: &[&str] = &[
    "について", "ください", "でした", "ました", "けれど", "から", "まで", "より", "です", "ます", "では", "には", "とは", "での", "への",
    "にも", "でも", "など", "ので", "のに", "けど", "して", "した", "する", "される", "ある", "いる", "こと", "これ", "それ", "あれ",
    "この", "その", "あの", "は", "が", "を", "に", "の", "で", "と", "も", "へ", "や",
];

/// Common Japanese words that contain a particle character and are kept whole.
#[rustfmt::skip]
const JA_KEEP: &[&str] = &[
    "現在", "存在", "平和", "和食", "ともだち", "ところ",
];

/// Korean particles (josa), stripped from the end of a word, longest first.
#[rustfmt::skip]
pub const KO_SUFFIXES: &[&str] = &[
    "에서는", "으로는", "에게서", "이라고", "에서", "에게", "으로", "부터", "까지", "한테", "께서", "처럼", "보다", "이나", "이랑",
    "하고", "마다", "조차", "밖에", "에는", "로는", "와는", "과는", "이다", "입니다", "은", "는", "이", "가", "을", "를", "에",
    "의", "로", "와", "과", "도", "만", "나", "랑",
];

/// Korean stop words (whole words, or what is left after a particle is stripped).
#[rustfmt::skip]
pub const KO_STOP: &[&str] = &[
    "나", "너", "우리", "저", "저희", "그", "그녀", "그들", "이", "것", "수", "등", "및", "또", "또는", "그리고", "그러나",
    "하지만", "그래서", "그런데", "때문에", "위해", "대한", "대해", "통해", "있다", "없다", "하다", "되다", "이다", "어떤", "무엇",
    "어디", "언제", "왜", "어떻게", "누구", "여기", "거기", "저기", "이것", "그것", "저것", "좀", "잘", "더", "매우", "아주",
    "같은", "다른", "모든", "뭐", "어느",
];

/// The languages whose stop words and particles query expansion removes.
pub const LANGUAGES: &[Language] = &[
    Language {
        code: "en",
        stop_words: EN_STOP,
        particles: &[],
        suffixes: &[],
    },
    Language {
        code: "es",
        stop_words: ES_STOP,
        particles: &[],
        suffixes: &[],
    },
    Language {
        code: "pt",
        stop_words: PT_STOP,
        particles: &[],
        suffixes: &[],
    },
    Language {
        code: "ar",
        stop_words: AR_STOP,
        particles: &[],
        suffixes: &[],
    },
    Language {
        code: "zh",
        stop_words: &[],
        particles: ZH_PARTICLES,
        suffixes: &[],
    },
    Language {
        code: "ja",
        stop_words: &[],
        particles: JA_PARTICLES,
        suffixes: &[],
    },
    Language {
        code: "ko",
        stop_words: KO_STOP,
        particles: &[],
        suffixes: KO_SUFFIXES,
    },
];

/// `w` with Latin diacritics removed, Arabic harakat and tatweel removed, and the Arabic
/// alef forms (أ إ آ ٱ) and alef maqsura (ى) folded to ا and ي: the form stop words are
/// compared in.
pub fn fold(w: &str) -> Cow<'_, str> {
    let map = |c: char| -> Option<char> {
        Some(match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            'أ' | 'إ' | 'آ' | 'ٱ' => 'ا',
            'ى' => 'ي',
            _ => return None,
        })
    };
    let drop = |c: char| matches!(c, '\u{0640}' | '\u{064B}'..='\u{065F}' | '\u{0670}');
    if !w.chars().any(|c| drop(c) || map(c).is_some()) {
        return Cow::Borrowed(w);
    }
    Cow::Owned(
        w.chars()
            .filter(|&c| !drop(c))
            .map(|c| map(c).unwrap_or(c))
            .collect(),
    )
}

/// Every language's stop words, folded.
fn stop_set() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        LANGUAGES
            .iter()
            .flat_map(|l| l.stop_words.iter())
            .map(|w| fold(w).into_owned())
            .collect()
    })
}

/// Whether the lower-case word `w` is a stop word of any language in [`LANGUAGES`].
pub fn is_stop_word(w: &str) -> bool {
    stop_set().contains(fold(w).as_ref())
}

fn is_hangul(c: char) -> bool {
    matches!(c as u32, 0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F)
}

fn is_kana(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F)
}

/// A Korean word without its particle suffix (the longest that leaves something).
fn strip_ko(w: &str) -> &str {
    KO_SUFFIXES
        .iter()
        .filter(|s| w.len() > s.len() && w.ends_with(*s))
        .max_by_key(|s| s.len())
        .map_or(w, |s| &w[..w.len() - s.len()])
}

/// A run of Han and kana cut at its particles: the pieces between them.
fn split_particles(run: &str) -> Vec<String> {
    let (particles, keep) = if run.chars().any(is_kana) {
        (JA_PARTICLES, JA_KEEP)
    } else {
        (ZH_PARTICLES, ZH_KEEP)
    };
    let longest = |rest: &str, list: &[&str]| -> usize {
        list.iter()
            .filter(|p| rest.starts_with(*p))
            .map(|p| p.len())
            .max()
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < run.len() {
        let rest = &run[i..];
        let k = longest(rest, keep);
        if k > 0 {
            cur.push_str(&rest[..k]);
            i += k;
            continue;
        }
        let p = longest(rest, particles);
        if p > 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            i += p;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        cur.push(c);
        i += c.len_utf8();
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The keywords of one lower-case query word (a [`super::search::tokenize`] token): none
/// for a stop word; for a word mixing scripts, one piece per script run; CJK runs cut at
/// their particles, Korean words without their particle suffix.
pub fn keywords(word: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !word.chars().any(is_cjk) {
        if !is_stop_word(word) {
            out.push(word.to_string());
        }
        return out;
    }
    // Script runs: not CJK / Hangul / Han and kana.
    let class = |c: char| {
        if is_hangul(c) {
            1
        } else if is_cjk(c) {
            2
        } else {
            0
        }
    };
    let mut start = 0;
    let mut chars = word.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let end = chars.peek().map_or(word.len(), |&(j, _)| j);
        if chars.peek().is_some_and(|&(_, d)| class(d) == class(c)) {
            continue;
        }
        let run = &word[start..end];
        start = end;
        match class(c) {
            0 => out.extend(keywords(run)),
            1 => {
                if !is_stop_word(run) {
                    let stem = strip_ko(run);
                    if !is_stop_word(stem) {
                        out.push(stem.to_string());
                    }
                }
            }
            _ => out.extend(split_particles(run)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_lower_case_and_sized() {
        for l in LANGUAGES {
            for w in l.stop_words {
                assert_eq!(w.to_lowercase(), *w, "{}: {w}", l.code);
                assert!(!w.is_empty());
            }
        }
        assert!(ES_STOP.len() >= 100 && PT_STOP.len() >= 100 && AR_STOP.len() >= 100);
        // Words left out on purpose (content words in English or in notes).
        for w in [
            "son", "sin", "era", "sea", "solo", "todo", "todos", "os", "su", "eu",
        ] {
            assert!(!is_stop_word(w), "{w}");
        }
    }

    #[test]
    fn folding_matches_accents_and_arabic_variants() {
        assert!(is_stop_word("está") && is_stop_word("esta"));
        assert!(is_stop_word("nao") && is_stop_word("não"));
        assert!(is_stop_word("إلى") && is_stop_word("الى") && is_stop_word("إِلَى"));
        assert_eq!(fold("deploy"), Cow::Borrowed("deploy"));
        assert!(!is_stop_word("servidor"));
    }

    #[test]
    fn cjk_runs_are_cut_at_particles() {
        assert_eq!(keywords("東京の天気は"), vec!["東京", "天気"]);
        assert_eq!(keywords("北京的天气"), vec!["北京", "天气"]);
        assert_eq!(keywords("现在的天气"), vec!["现在", "天气"]);
        assert_eq!(keywords("서울의"), vec!["서울"]);
        assert_eq!(keywords("날씨는"), vec!["날씨"]);
        assert!(keywords("그리고").is_empty());
        assert!(keywords("の").is_empty());
        // Mixed scripts: one piece per run.
        assert_eq!(keywords("使用rust编写"), vec!["使用", "rust", "编写"]);
        assert_eq!(keywords("the"), Vec::<String>::new());
        assert_eq!(keywords("kafka"), vec!["kafka"]);
    }
}
