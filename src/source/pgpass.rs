//! The PostgreSQL password, found as psql finds it: `PGPASSWORD`, else the
//! password file (`PGPASSFILE`, else `~/.pgpass`). Never from the URL.
