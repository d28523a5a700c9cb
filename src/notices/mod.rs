//! Customer notices by email. A notice is queued in the outbox as facts, inside the
//! transaction of the state change that causes it, keyed by its cause so a replayed event
//! queues nothing new; the sender job renders it and delivers it later through the
//! configured [`mailer`].

pub mod mailer;
pub mod outbox;
pub mod templates;

use templates::{Letterhead, Rendered};

use crate::{
    clock::Millis,
    config::EmailConfig,
    db::notices::{Envelope, NewNotice, NoticeContent, NoticeRow},
    domain::notice::{Audience, Notice},
};

/// The envelope of a notice to support (`email.support_email`) about `account_id`.
pub fn support_envelope(
    cause: String,
    account_id: &str,
    email: &EmailConfig,
    at: Millis,
) -> Envelope {
    Envelope {
        staff: Some((email.support_email.clone(), SUPPORT_NAME.to_owned())),
        ..Envelope::to_owner(cause, account_id, email, at)
    }
}

/// A notice to queue, caused by `cause_of` (see [`envelope`]) and named by its kind;
/// sent to the account's owner, or to support (`email.support_email`) for notices meant
/// for staff.
pub fn compose(
    cause_of: &str,
    account_id: &str,
    notice: Notice,
    email: &EmailConfig,
    at: Millis,
) -> NewNotice {
    let address = match notice.audience() {
        Audience::Customer => Envelope::to_owner,
        Audience::Support => support_envelope,
    };
    let cause = format!("{cause_of}:{}", notice.kind());
    NewNotice {
        envelope: address(cause, account_id, email, at),
        notice,
    }
}

/// How notices to support greet their reader.
const SUPPORT_NAME: &str = "Support team";

/// The words of a stored notice: its facts rendered for its recipient (with the
/// notice's own link to the billing page), or the rendering it was queued with.
pub fn render(row: &NoticeRow, head: &Letterhead) -> Rendered {
    match &row.content {
        NoticeContent::Facts {
            recipient_name,
            notice,
        } => templates::render(
            notice,
            recipient_name,
            &head.for_notice(&row.account_id, row.created_at),
        ),
        NoticeContent::Rendered {
            subject,
            text,
            html,
        } => Rendered {
            subject: subject.clone(),
            text: text.clone(),
            html: html.clone(),
        },
    }
}
