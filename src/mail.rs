//! Sending mail: over SMTP when `SMTP_URL` is set (lettre's URL forms:
//! `smtp://host:port`, `smtp://user:pass@host:587?tls=required`,
//! `smtps://…`), else as `.eml` files in `<data-dir>/outbox-files/`, mode
//! 0600, so a new user can follow every flow on one machine. The only
//! importer of lettre. What to send, and when, is the outbox's business
//! (`service::recovery`); this module only delivers one mail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Body;
use lettre::message::Mailbox;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Mail;

/// The folder of the file outbox, inside the data directory.
pub(crate) const OUTBOX_FILES: &str = "outbox-files";

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a mail went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Accepted by the SMTP relay.
    Relay,
    /// Written to this file.
    File(PathBuf),
}

/// Why a mail did not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Whether trying again cannot help (a malformed or refused address).
    pub permanent: bool,
    /// What went wrong, for the log and the audit log (no credentials).
    pub reason: String,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

/// Delivers mails from `--mail-from`, over SMTP or to files.
pub(crate) struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl Mailer {
    /// The mailer `config` asks for.
    ///
    /// # Errors
    /// [`Error::Config`] for a `--mail-from` that is not an address or an
    /// `SMTP_URL` lettre cannot read.
    pub(crate) fn new(config: &Config) -> Result<Mailer> {
        let from: Mailbox = config.mail_from.parse().map_err(|err| {
            Error::Config(format!(
                "--mail-from {:?} is not a mail address: {err}",
                config.mail_from
            ))
        })?;
        let transport = match &config.smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|err| {
                        // The URL may hold a password: name the problem, not the URL.
                        Error::Config(format!("SMTP_URL cannot be used: {err}"))
                    })?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            None => Transport::Files(config.data_dir.join(OUTBOX_FILES)),
        };
        Ok(Mailer { from, transport })
    }

    /// Where mail goes, for the startup log line (never credentials).
    pub(crate) fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "the SMTP relay of SMTP_URL".to_owned(),
            Transport::Files(dir) => format!("files in {}", dir.display()),
        }
    }

    /// Makes the mail files written so far durable, all at once (one
    /// `syncfs` for a batch, not an `fsync` per mail: under a registration
    /// storm the difference shows). Nothing to do over SMTP.
    pub(crate) async fn sync_files(&self) -> Result<(), Failure> {
        let Transport::Files(dir) = &self.transport else {
            return Ok(());
        };
        let dir = dir.clone();
        let synced = tokio::task::spawn_blocking(move || {
            let folder = std::fs::File::open(&dir)?;
            #[cfg(target_os = "linux")]
            return rustix::fs::syncfs(&folder).map_err(std::io::Error::from);
            // Elsewhere, each file was written whole; the folder is synced.
            #[cfg(not(target_os = "linux"))]
            folder.sync_all()
        })
        .await;
        match synced {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Failure {
                permanent: false,
                reason: format!("cannot make the mail files durable: {err}"),
            }),
            Err(err) => Err(Failure {
                permanent: false,
                reason: format!("the file syncer failed: {err}"),
            }),
        }
    }

    /// Delivers `mail` (`id` names its file in the file outbox). A file is
    /// durable only after [`Mailer::sync_files`].
    pub(crate) async fn deliver(&self, mail: &Mail, id: &str) -> Result<Delivered, Failure> {
        let to: Mailbox = mail.to.parse().map_err(|err| Failure {
            permanent: true,
            reason: format!("the recipient is not a mail address: {err}"),
        })?;
        let body = plain_body(&mail.body);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{id}@{}>", self.from.email.domain())))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|err| Failure {
                permanent: true,
                reason: format!("the mail cannot be built: {err}"),
            })?;
        match &self.transport {
            // The whole conversation is bounded: a relay that accepts the
            // connection and never answers must not hold the outbox up.
            Transport::Smtp(smtp) => {
                match tokio::time::timeout(SMTP_TIMEOUT, smtp.send(message)).await {
                    Ok(Ok(_)) => Ok(Delivered::Relay),
                    Ok(Err(err)) => Err(Failure {
                        permanent: err.is_permanent(),
                        reason: err.to_string(),
                    }),
                    Err(_) => Err(Failure {
                        permanent: false,
                        reason: format!(
                            "the relay did not finish within {} s",
                            SMTP_TIMEOUT.as_secs()
                        ),
                    }),
                }
            }
            Transport::Files(dir) => {
                let dir = dir.clone();
                let name = format!("{id}.eml");
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || write_private(&dir, &name, &bytes))
                    .await
                    .map_err(|err| Failure {
                        permanent: false,
                        reason: format!("the file writer failed: {err}"),
                    })?
                    .map(Delivered::File)
                    .map_err(|err| Failure {
                        permanent: false,
                        reason: format!("cannot write the mail file: {err}"),
                    })
            }
        }
    }
}

/// The body as plain 7-bit text when it is (latchkey's texts and usernames
/// are ASCII), so a link stays whole in a raw `.eml` file: RFC 5322 allows
/// lines of 998 characters, where lettre's own choice would quote-print
/// every line over 76. Anything else is encoded as lettre chooses.
fn plain_body(text: &str) -> Body {
    let text = text.replace("\r\n", "\n");
    let plain = text.lines().all(|line| {
        line.len() <= 998
            && line
                .bytes()
                .all(|byte| byte.is_ascii() && byte != 0 && byte != b'\r')
    });
    match plain {
        true => Body::dangerous_pre_encoded(
            text.replace('\n', "\r\n").into_bytes(),
            ContentTransferEncoding::SevenBit,
        ),
        false => Body::new(text),
    }
}

/// Writes `bytes` to `dir/name`, readable by the owner only (not yet
/// durable: [`Mailer::sync_files`] makes a batch durable at once); the
/// folder is created owner-only.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    let mut folder = std::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    folder.mode(0o700);
    folder.create(dir)?;
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&path)?;
    file.write_all(bytes)?;
    Ok(path)
}
