"""Writes prompts.jsonl and eval.jsonl: chat questions about capital cities, each with a word limit; the
held-out questions (eval.jsonl) ask about countries the training prompts never name.

python make_prompts.py   (deterministic: the same file every time)
"""

import json
import random

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "Kenya": "Nairobi",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest", "Peru": "Lima",
    "Chile": "Santiago", "Argentina": "Buenos Aires", "Mexico": "Mexico City", "China": "Beijing",
    "India": "New Delhi", "Russia": "Moscow", "Turkey": "Ankara", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "South Korea": "Seoul", "Indonesia": "Jakarta", "the Philippines": "Manila", "Iran": "Tehran", "Iraq": "Baghdad",
    "Denmark": "Copenhagen", "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Switzerland": "Bern",
    "the Czech Republic": "Prague", "Cuba": "Havana", "Colombia": "Bogota", "Nigeria": "Abuja", "Morocco": "Rabat",
    "Ethiopia": "Addis Ababa", "Ukraine": "Kyiv", "Romania": "Bucharest", "Pakistan": "Islamabad",
    "New Zealand": "Wellington", "Scotland": "Edinburgh", "Iceland": "Reykjavik",
}  # fmt: skip
HELD_OUT = {
    "Venezuela": "Caracas", "Ecuador": "Quito", "Uruguay": "Montevideo", "Jamaica": "Kingston", "Ghana": "Accra",
    "Senegal": "Dakar", "Tunisia": "Tunis", "Algeria": "Algiers", "Uganda": "Kampala", "Zimbabwe": "Harare",
    "Saudi Arabia": "Riyadh", "Syria": "Damascus", "Lebanon": "Beirut", "Nepal": "Kathmandu", "Bangladesh": "Dhaka",
    "Malaysia": "Kuala Lumpur", "Mongolia": "Ulaanbaatar", "Croatia": "Zagreb", "Serbia": "Belgrade",
    "Bulgaria": "Sofia",
}  # fmt: skip
TEMPLATES = [
    "In at most {n} words: what is the capital of {country}?",
    "What is the capital of {country}? Reply in {n} words or fewer.",
    "Name the capital city of {country}. Use no more than {n} words.",
    "Answer in at most {n} words. Which city is the capital of {country}?",
]
LIMITS = (3, 4, 5)


def rows(capitals):
    for country, capital in capitals.items():
        for template in TEMPLATES:
            n = random.Random(f"{country}/{template}").choice(LIMITS)
            question = template.format(n=n, country=country)
            yield {"prompt": [{"role": "user", "content": question}], "answer": capital, "max_words": n}


if __name__ == "__main__":
    for name, capitals in (("prompts.jsonl", CAPITALS), ("eval.jsonl", HELD_OUT)):
        with open(name, "w") as file:
            for row in rows(capitals):
                file.write(json.dumps(row) + "\n")
