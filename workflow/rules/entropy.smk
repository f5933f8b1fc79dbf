rule entropy_table:
    output:
        "results/entropy_table.csv",
    log:
        "logs/entropy_table.log",
    shell:
        "python -m egrpo entropy --steps 16 --shift 3 --eta 0.7 --tau 2.2 --out {output} > {log} 2>&1"
