-- flamingock: autor=ana
SELECT 1;
