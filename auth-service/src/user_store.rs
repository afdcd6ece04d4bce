//! Users in MongoDB: one document per user, unique indexes on the case-folded username and on
//! the (lower-cased) e-mail address, created at start. A disabled account carries the time it
//! was disabled; a deleted one is gone.

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{Email, Username};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use crate::indexes;

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// When an administrator disabled the account; `None` while it is enabled. Not shown.
    #[serde(skip)]
    pub disabled_at: Option<DateTime<Utc>>,
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserDocument {
    #[serde(rename = "_id")]
    id: String,
    username: String,
    /// Case-folded username; carries the unique index.
    username_key: String,
    email: String,
    password_hash: String,
    created_at: bson::DateTime,
    /// Absent while the account is enabled (documents from before accounts could be
    /// disabled have no such field either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disabled_at: Option<bson::DateTime>,
}

impl UserDocument {
    fn to_user(&self) -> User {
        User {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            created_at: from_bson(self.created_at),
            disabled_at: self.disabled_at.map(from_bson),
        }
    }
}

/// A user found for login, with the hash to check the password against.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("username is taken")]
    UsernameTaken,
    #[error("email is taken")]
    EmailTaken,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[derive(Clone)]
pub struct UserStore {
    users: Collection<UserDocument>,
}

impl UserStore {
    /// Opens the `users` collection and makes sure its unique indexes exist.
    pub async fn open(db: &Database) -> anyhow::Result<Self> {
        let users = db.collection::<UserDocument>("users");
        indexes::ensure(
            &users,
            [
                indexes::index(doc! {"username_key": 1}, "username_key_unique", true),
                indexes::index(doc! {"email": 1}, "email_unique", true),
            ],
        )
        .await?;
        Ok(Self { users })
    }

    pub async fn insert(
        &self,
        username: &Username,
        email: &Email,
        password_hash: String,
    ) -> Result<User, InsertError> {
        let now = Utc::now();
        let document = UserDocument {
            id: ulid::Ulid::new().to_string(),
            username: username.to_string(),
            username_key: username.normalized(),
            email: email.to_string(),
            password_hash,
            created_at: to_bson(now),
            disabled_at: None,
        };
        match self.users.insert_one(&document).await {
            Ok(_) => Ok(document.to_user()),
            Err(error) if common::mongo::is_duplicate_key(&error) => {
                // Which index refused it: ask rather than parse server messages, whose wording
                // differs between MongoDB and compatible servers.
                if self.find_by_username(username).await?.is_some() {
                    Err(InsertError::UsernameTaken)
                } else {
                    Err(InsertError::EmailTaken)
                }
            }
            Err(error) => Err(anyhow::Error::from(error)
                .context("inserting a user")
                .into()),
        }
    }

    async fn find_document(&self, filter: bson::Document) -> anyhow::Result<Option<UserDocument>> {
        self.users
            .find_one(filter)
            .await
            .context("looking up a user")
    }

    pub async fn find_by_username(
        &self,
        username: &Username,
    ) -> anyhow::Result<Option<Credentials>> {
        Ok(self
            .find_document(doc! {"username_key": username.normalized()})
            .await?
            .map(|d| Credentials {
                user: d.to_user(),
                password_hash: d.password_hash,
            }))
    }

    /// Replaces the password hash, unless it changed since `old` was read. Returns whether
    /// the stored hash was replaced.
    pub async fn replace_password_hash(
        &self,
        id: &str,
        old: &str,
        new: String,
    ) -> anyhow::Result<bool> {
        let result = self
            .users
            .update_one(
                doc! {"_id": id, "password_hash": old},
                doc! {"$set": {"password_hash": new}},
            )
            .await
            .context("replacing a password hash")?;
        Ok(result.modified_count == 1)
    }

    pub async fn find_by_id(&self, id: &str) -> anyhow::Result<Option<User>> {
        Ok(self
            .find_document(doc! {"_id": id})
            .await?
            .map(|d| d.to_user()))
    }

    /// The user and their password hash, for a password confirmation.
    pub async fn credentials_by_id(&self, id: &str) -> anyhow::Result<Option<Credentials>> {
        Ok(self
            .find_document(doc! {"_id": id})
            .await?
            .map(|d| Credentials {
                user: d.to_user(),
                password_hash: d.password_hash,
            }))
    }

    /// Enabled users whose case-folded username starts with `prefix` (already case-folded),
    /// in username order, at most `limit`. A range over the unique `username_key` index on
    /// MongoDB; bounded in time like every other read.
    pub async fn search_by_username_prefix(
        &self,
        prefix: &str,
        limit: i64,
    ) -> anyhow::Result<Vec<User>> {
        // Every key with this prefix sorts between the prefix and the prefix followed by the
        // highest character there is.
        let upper = format!("{prefix}{}", char::MAX);
        let documents: Vec<UserDocument> = self
            .users
            .find(doc! {
                "username_key": {"$gte": prefix, "$lt": upper},
                "disabled_at": {"$exists": false},
            })
            .sort(doc! {"username_key": 1})
            .limit(limit)
            .max_time(std::time::Duration::from_secs(2))
            .await
            .context("searching users")?
            .try_collect()
            .await
            .context("searching users")?;
        Ok(documents.iter().map(UserDocument::to_user).collect())
    }

    /// Marks the account disabled since `at`, or enabled (`None`). Returns whether the user
    /// exists.
    pub async fn set_disabled(&self, id: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<bool> {
        let update = match at {
            Some(at) => doc! {"$set": {"disabled_at": to_bson(at)}},
            None => doc! {"$unset": {"disabled_at": ""}},
        };
        let result = self
            .users
            .update_one(doc! {"_id": id}, update)
            .await
            .context("changing whether an account is disabled")?;
        Ok(result.matched_count == 1)
    }

    /// Deletes the user's document. Returns whether there was one.
    pub async fn delete(&self, id: &str) -> anyhow::Result<bool> {
        let result = self
            .users
            .delete_one(doc! {"_id": id})
            .await
            .context("deleting a user")?;
        Ok(result.deleted_count == 1)
    }
}

fn to_bson(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

fn from_bson(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}
