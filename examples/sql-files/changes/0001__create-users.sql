-- flamingock: author=ana description="users, one account per e-mail"
CREATE TABLE users (
  id    INTEGER PRIMARY KEY,
  email TEXT NOT NULL UNIQUE
);
