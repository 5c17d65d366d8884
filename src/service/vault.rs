//! Where the core keeps its state and its generated secrets: the store
//! (sled in the data directory, or PostgreSQL with `DATABASE_URL`) and the
//! secrets (files in the data directory, or rows of the database sealed
//! with `LATCHKEY_MASTER_KEY`, so that every node signs and verifies alike).
//! And the signing material a core runs with, kept so a node can reload a
//! key ring another node rotated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Secret;
use crate::secrets::{Sealer, SecretHome};
use crate::storage::{PgOptions, Store};
use crate::tokens::keys::{KEY_FILE, KeyRing};
use crate::tokens::{AccessSigner, Tokens};

/// The store and the home of the secrets.
pub(crate) struct Vault {
    pub(crate) store: Store,
    /// The sealer of the database's secrets (PostgreSQL only).
    master: Option<Sealer>,
    data_dir: PathBuf,
}

impl Vault {
    /// Opens the store `config` names.
    ///
    /// # Errors
    /// As [`Store::open`] and [`Store::connect`].
    pub(crate) async fn open(config: &Config) -> Result<Vault> {
        let data_dir = config.data_dir.clone();
        let Some(url) = &config.database_url else {
            let store = Store::open(&config.data_dir, config.db_cache_bytes())?;
            return Ok(Vault {
                store,
                master: None,
                data_dir,
            });
        };
        let master_key = config.master_key.as_ref().ok_or_else(|| {
            Error::Config("DATABASE_URL needs LATCHKEY_MASTER_KEY (at least 32 bytes)".into())
        })?;
        let options = PgOptions {
            pool_size: config.db_pool_size,
            ..PgOptions::default()
        };
        let store = Store::connect(url.expose(), &options).await?;
        Ok(Vault {
            store,
            master: Some(Sealer::master(master_key)),
            data_dir,
        })
    }

    /// Whether the secrets live in the database, shared by every node.
    pub(crate) fn shares_secrets(&self) -> bool {
        self.master.is_some()
    }

    /// Runs `use_secrets` over the home of the secrets and keeps what it
    /// generated or replaced. With PostgreSQL: loads them all, runs, saves;
    /// when another node created a secret meanwhile, runs again over
    /// theirs, so all nodes end up with the same.
    ///
    /// # Errors
    /// Whatever `use_secrets` returns, [`Error::Config`] when the master
    /// key does not open the stored secrets, [`Error::Storage`].
    pub(crate) async fn with_secrets<T>(
        &self,
        use_secrets: impl Fn(&SecretHome) -> Result<T>,
    ) -> Result<T> {
        let Some(master) = &self.master else {
            return use_secrets(&SecretHome::Dir(self.data_dir.clone()));
        };
        for _ in 0..5 {
            let home = SecretHome::memory(self.load(master).await?);
            let value = use_secrets(&home)?;
            if self.save(master, &home).await? {
                return Ok(value);
            }
        }
        Err(Error::Storage(
            "the database's secrets kept changing while they were being created".into(),
        ))
    }

    /// The secrets in the database, opened.
    async fn load(&self, master: &Sealer) -> Result<BTreeMap<String, String>> {
        let mut texts = BTreeMap::new();
        for (name, sealed) in self.store.sealed_secrets().await? {
            let opened = std::str::from_utf8(&sealed)
                .ok()
                .and_then(|sealed| master.open_sealed(sealed, &name).ok())
                .and_then(|plain| String::from_utf8(plain).ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "LATCHKEY_MASTER_KEY does not open the database's secret {name}: \
                         start every node with the key the first one was started with"
                    ))
                })?;
            texts.insert(name, opened);
        }
        Ok(texts)
    }

    /// Seals and stores what `home` created and replaced. Returns false
    /// when another node created one of them first.
    async fn save(&self, master: &Sealer, home: &SecretHome) -> Result<bool> {
        for (name, text, replace) in home.take_changes() {
            let sealed = master.seal(text.as_bytes(), &name);
            if !self
                .store
                .put_sealed_secret(&name, sealed.as_bytes(), replace)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every secret, in the clear, by name: the database's, or the files
    /// of the data directory (for an export).
    ///
    /// # Errors
    /// As [`Vault::with_secrets`].
    pub(crate) async fn secrets(&self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        self.with_secrets(|home| {
            let mut found = BTreeMap::new();
            for name in names {
                if let Some(secret) = home.read(name)? {
                    found.insert((*name).to_owned(), secret.expose().to_owned());
                }
            }
            Ok(found)
        })
        .await
    }

    /// Keeps `secrets` (from an import) over whatever is there.
    ///
    /// # Errors
    /// As [`Vault::with_secrets`].
    pub(crate) async fn replace_secrets(&self, secrets: &BTreeMap<String, String>) -> Result<()> {
        self.with_secrets(|home| {
            for (name, text) in secrets {
                home.replace(name, text)?;
            }
            Ok(())
        })
        .await
    }
}

/// The signing material of a serving core.
pub(crate) struct Keys {
    access: AccessSigner,
    refresh_secret: Secret,
    /// The key ring's text as last loaded (to notice a rotation elsewhere).
    ring_text: Option<String>,
}

impl Keys {
    pub(crate) fn new(
        access: AccessSigner,
        refresh_secret: Secret,
        home: &SecretHome,
    ) -> Result<Keys> {
        Ok(Keys {
            access,
            refresh_secret,
            ring_text: home.read(KEY_FILE)?.map(|text| text.expose().to_owned()),
        })
    }

    /// The tokens they sign and verify.
    pub(crate) fn tokens(&self, config: &Config) -> Result<Tokens> {
        Tokens::new(&self.access, &self.refresh_secret, config)
    }

    /// Takes up the ring kept in `home` if it differs from the one in use
    /// (and keys sign, not HS256). Returns whether it changed.
    pub(crate) fn reload(&mut self, home: &SecretHome) -> Result<bool> {
        if !matches!(self.access, AccessSigner::Keys(_)) {
            return Ok(false);
        }
        let text = home.read(KEY_FILE)?.map(|text| text.expose().to_owned());
        if text == self.ring_text {
            return Ok(false);
        }
        if let Some(ring) = text
            .as_deref()
            .map(|text| KeyRing::parse(text, home))
            .transpose()?
            .flatten()
        {
            self.access = AccessSigner::Keys(ring);
        }
        self.ring_text = text;
        Ok(true)
    }
}
