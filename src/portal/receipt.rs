//! A paid purchase's receipt as a one-page PDF: the seller (name, address, tax id, from
//! the configuration), the receipt's number and date, what was bought and how it was paid.
//! Written with the PDF's built-in Helvetica, so nothing is embedded and any reader shows
//! it; text is WinAnsi-encoded (Latin-1), anything beyond shows as "?".

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptFacts {
    pub number: String,
    pub date: String,
    pub seller_name: String,
    pub seller_address: String,
    pub seller_tax_id: String,
    pub customer_name: String,
    pub customer_email: String,
    pub description: String,
    pub credits: String,
    pub amount: String,
    pub card: String,
    pub transaction: String,
}

const A4: (f32, f32) = (595.0, 842.0);
const MARGIN: f32 = 56.0;

pub fn pdf(facts: &ReceiptFacts) -> Vec<u8> {
    let (catalog, tree, page, font, bold, content, info) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
        Ref::new(6),
        Ref::new(7),
    );
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    let mut p = pdf.page(page);
    p.media_box(Rect::new(0.0, 0.0, A4.0, A4.1));
    p.parent(tree);
    p.contents(content);
    {
        let mut resources = p.resources();
        let mut fonts = resources.fonts();
        fonts.pair(Name(b"F1"), font);
        fonts.pair(Name(b"F2"), bold);
    }
    p.finish();
    for (id, base) in [(font, "Helvetica"), (bold, "Helvetica-Bold")] {
        pdf.type1_font(id)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(TextStr(&format!("Receipt {}", facts.number)))
        .producer(TextStr("topupd"));
    pdf.stream(content, &page_content(facts).finish());
    pdf.finish()
}

fn page_content(facts: &ReceiptFacts) -> Content {
    let mut lines = Lines::new();
    lines.text(true, 22.0, &facts.seller_name);
    for line in facts.seller_address.lines() {
        lines.text(false, 10.0, line);
    }
    if !facts.seller_tax_id.is_empty() {
        lines.text(false, 10.0, &format!("Tax ID: {}", facts.seller_tax_id));
    }
    lines.gap(28.0);
    lines.text(true, 16.0, "Receipt");
    lines.gap(6.0);
    for (label, value) in [
        ("Receipt number", &facts.number),
        ("Date paid", &facts.date),
        ("Billed to", &facts.customer_name),
        ("Email", &facts.customer_email),
    ] {
        lines.pair(label, value);
    }
    lines.gap(20.0);
    for (label, value) in [
        ("Description", &facts.description),
        ("Credits", &facts.credits),
        ("Amount paid", &facts.amount),
        ("Paid with", &facts.card),
        ("Transaction", &facts.transaction),
    ] {
        lines.pair(label, value);
    }
    lines.gap(28.0);
    lines.text(
        false,
        9.0,
        "Credits are prepaid and used by your requests; this receipt is your record of payment.",
    );
    lines.content
}

/// Lines of text down the page from the top margin.
struct Lines {
    content: Content,
    y: f32,
}

impl Lines {
    fn new() -> Self {
        Self {
            content: Content::new(),
            y: A4.1 - MARGIN,
        }
    }

    fn gap(&mut self, points: f32) {
        self.y -= points;
    }

    fn text(&mut self, bold: bool, size: f32, text: &str) {
        self.y -= size * 1.4;
        self.show(bold, size, MARGIN, text);
    }

    fn pair(&mut self, label: &str, value: &str) {
        self.y -= 16.0;
        self.show(true, 10.5, MARGIN, label);
        self.show(false, 10.5, MARGIN + 130.0, value);
    }

    fn show(&mut self, bold: bool, size: f32, x: f32, text: &str) {
        let font = if bold { Name(b"F2") } else { Name(b"F1") };
        self.content.begin_text();
        self.content.set_font(font, size);
        self.content.next_line(x, self.y);
        self.content.show(Str(&win_ansi(text)));
        self.content.end_text();
    }
}

/// `text` in WinAnsi: ASCII and Latin-1 as they are, anything else as "?".
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match u32::from(c) {
            code @ (0x20..=0x7e | 0xa0..=0xff) => u8::try_from(code).unwrap_or(b'?'),
            _ => b'?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_is_a_pdf_with_its_facts_in_plain_text() {
        let facts = ReceiptFacts {
            number: "att_1".into(),
            date: "21 November 2026".into(),
            seller_name: "Acme Ltd".into(),
            seller_address: "1 Main St\nSpringfield".into(),
            seller_tax_id: "GB123".into(),
            customer_name: "Zoë".into(),
            customer_email: "z@example.com".into(),
            description: "Credits".into(),
            credits: "5,000 credits".into(),
            amount: "$50.00".into(),
            card: "Visa ending 4242".into(),
            transaction: "pi_1".into(),
        };
        let bytes = pdf(&facts);
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(bytes.ends_with(b"%%EOF") || bytes.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&bytes);
        for fact in ["$50.00", "5,000 credits", "Tax ID: GB123", "Springfield"] {
            assert!(text.contains(fact), "{fact} missing");
        }
    }

    #[test]
    fn text_outside_latin_1_is_replaced() {
        assert_eq!(win_ansi("Zoë €5"), b"Zo\xeb ?5".to_vec());
    }
}
