-- flamingock: author=ana description="users table"
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  email TEXT NOT NULL UNIQUE -- one account per address; really
);
