-- flamingock: author=ana
INSERT INTO users (id, email) VALUES (1, 'admin@example.com');
