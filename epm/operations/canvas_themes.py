"""What words in a session mean for its business model canvas: themes and customer groups.

A theme is recognised by any of its keywords and adds one item to some of the nine blocks; an item
may name the business's ``{offering}``, its first customer ``{segment}`` or the ``{word}`` that matched.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Theme:
    keywords: frozenset[str]
    items: dict[str, str]


def _theme(keywords: str, **items: str) -> Theme:
    return Theme(frozenset(keywords.split()), items)


THEMES = (
    _theme("subscription subscriptions subscribe subscribers recurring membership memberships monthly",
           revenue_streams="Recurring subscription fees for the {offering}",
           customer_relationships="Subscription accounts with self-service pause, skip and cancel",
           key_activities="Subscriber retention and churn management"),
    _theme("delivery deliveries deliver delivers delivered delivering shipping logistics courier couriers doorstep",
           key_partners="Delivery and logistics partners",
           key_activities="Order fulfilment and last-mile delivery",
           channels="Home delivery to {segment}",
           cost_structure="Delivery and fulfilment cost per order",
           key_resources="Fulfilment capacity: packing, routing and couriers"),
    _theme("online app apps website e-commerce ecommerce platform digital web mobile portal",
           channels="Website and mobile app",
           key_resources="The digital platform and its customer data",
           cost_structure="Platform development, hosting and maintenance",
           key_partners="Technology and payment providers",
           key_activities="Running and improving the {word} platform"),
    _theme("store stores shop shops showroom branch branches retail outlet outlets workshop workshops",
           channels="Own {word} as points of sale and service",
           key_resources="Locations and on-site staff",
           cost_structure="Rent, fit-out and staffing of the locations",
           customer_relationships="Personal service on site"),
    _theme("b2b enterprise enterprises businesses companies corporate smes clients wholesale",
           channels="Direct sales to business clients",
           customer_relationships="Account management for key clients",
           revenue_streams="Contracts with business clients"),
    _theme("local locally organic farm farms farmers producers ingredients sourced fresh seasonal",
           key_partners="Local producers and suppliers",
           value_propositions="Fresh, locally sourced {offering}",
           cost_structure="Sourcing from local producers"),
    _theme("sustainable sustainability green carbon electric e-bike e-bikes recycled recycling circular eco "
           "emissions",
           value_propositions="A lower environmental footprint than the alternatives",
           key_partners="Sustainability certifiers and circular-economy partners"),
    _theme("rental rentals rent renting lease leasing sharing",
           revenue_streams="Rental fees",
           key_resources="A rental fleet kept available and maintained",
           key_activities="Fleet maintenance and availability management"),
    _theme("repair repairs maintenance servicing refurbishment",
           revenue_streams="Repair and maintenance fees",
           key_activities="Repair and maintenance work",
           key_resources="Skilled technicians and workshop equipment"),
    _theme("marketplace commission commissions sellers vendors",
           revenue_streams="Commission on transactions between buyers and sellers",
           key_partners="Sellers and service providers on the marketplace"),
    _theme("software saas licence license licences licenses licensing api",
           revenue_streams="Software subscriptions or licences",
           key_activities="Product development and releases"),
    _theme("consulting consultancy advice advisory coaching courses course workshops training",
           revenue_streams="Fees for advice, training or courses",
           key_resources="Expert staff and their know-how"),
    _theme("community events event members social club",
           customer_relationships="A community around events and social channels",
           channels="Social media and community events"),
    _theme("affordable cheap cheaper low-cost save savings budget-friendly price prices pricing",
           value_propositions="Lower cost than the alternatives for {segment}"),
    _theme("fast faster quick quickly speed same-day instant convenient convenience easy busy time-saving",
           value_propositions="Convenience: saves {segment} time and effort"),
    _theme("quality premium luxury craft handmade artisan artisanal expert",
           value_propositions="Premium quality {offering}"),
    _theme("personal personalised personalized tailored custom bespoke",
           value_propositions="Personalised to each customer",
           key_activities="Customer data analysis for personalisation"),
    _theme("health healthy nutrition wellbeing wellness fitness care meal meals",
           value_propositions="Healthier choices for {segment}",
           key_partners="Nutrition or health experts"),
    _theme("secure security privacy trusted trust cybersecurity",
           value_propositions="Security and trust: customer data kept safe",
           key_activities="Security management"),
    _theme("iso certification certified compliance compliant audit audits gdpr regulation regulations regulatory "
           "accreditation standards",
           value_propositions="A clear route to certification and compliance",
           key_activities="Audit preparation and compliance reviews",
           key_partners="Certification bodies and accredited auditors"),
    _theme("marketing brand advertising campaign campaigns awareness seo",
           key_activities="Marketing and brand building",
           cost_structure="Customer acquisition: marketing and advertising",
           channels="Online marketing and social media"),
    _theme("partnership partnerships partner partners resellers reseller distributors distribution",
           channels="Resellers and distribution partners",
           key_partners="Distribution and reseller partners"),
    _theme("expand expansion cities city international countries regions launch",
           key_activities="Launching in new markets",
           cost_structure="Market-entry costs of each new location"),
)

# A word naming a group of customers, and the segment it stands for.
AUDIENCES = {
    "families": "Families", "parents": "Parents", "students": "Students", "commuters": "Commuters",
    "tourists": "Tourists and visitors", "smes": "Small and medium-sized businesses", "startups": "Start-ups",
    "enterprises": "Large enterprises", "businesses": "Businesses", "retailers": "Retailers",
    "restaurants": "Restaurants", "hospitals": "Hospitals", "clinics": "Clinics", "patients": "Patients",
    "developers": "Software developers", "farmers": "Farmers", "schools": "Schools", "seniors": "Seniors",
    "professionals": "Working professionals", "freelancers": "Freelancers", "municipalities": "Municipalities",
    "consumers": "Consumers", "shoppers": "Shoppers", "cyclists": "Cyclists", "homeowners": "Homeowners",
    "tenants": "Tenants", "landlords": "Landlords", "manufacturers": "Manufacturers", "travellers": "Travellers",
    "travelers": "Travellers", "gamers": "Gamers", "athletes": "Athletes", "teachers": "Teachers",
    "drivers": "Drivers", "couples": "Couples", "millennials": "Millennials", "pet": "Pet owners",
    "employers": "Employers", "nonprofits": "Non-profit organisations",
}
